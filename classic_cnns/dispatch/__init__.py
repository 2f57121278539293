"""Stages run by Dask workers, on this machine or many: every stale stage of the targets becomes a Dask
task, which a worker runs through DVC in a workspace of its own; the results come back through the DVC
remote and DVC's run-cache, and this clone's own `dvc repro` then trains nothing.

    python -m classic_cnns.dispatch ablations/dvc.yaml --workers 4          # a LocalCluster here
    python -m classic_cnns.dispatch ablations/full-size/dvc.yaml --scheduler tcp://10.0.0.5:8786

- plan.py: which stages are stale, in what order, and which of them a worker can run;
- task.py: the Dask task (a worker's workspace, the commit checked out there);
- attempt.py: one attempt at a stage, in that workspace (pull, `dvc repro`, push);
- __main__.py: the command: submit, wait, bring the results back, `dvc repro` the rest.
"""
