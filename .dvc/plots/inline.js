// Writes .dvc/plots/offline.html (the page `dvc plots show` fills in; .dvc/config names it) from
// offline.src.html with Vega, Vega-Lite and Vega-Embed inlined from node_modules (`npm ci`, versions
// pinned in package-lock.json), so the page draws its charts offline wherever it is written
// (`dvc plots show -o <any folder>`). Run after changing the source or the pins: `npm run plots-page`.
const fs = require("fs");
const path = require("path");
const here = __dirname;
const root = path.join(here, "..", "..");
const source = fs.readFileSync(path.join(here, "offline.src.html"), "utf8");
const page = source.replace(/<script src="\.\.\/(node_modules\/[^"]+)"><\/script>/g, (_, file) => {
  const code = fs.readFileSync(path.join(root, file), "utf8").replace(/<\/script/gi, "<\\/script");
  return `<script>/* ${file} */\n${code}\n</script>`;
});
fs.writeFileSync(path.join(here, "offline.html"), page);
