"""The report: its content, prose, figures and rendering to Markdown and HTML."""
