"""Every folder lmforge writes, each with one owner of its file names and formats; none imports torch.

    run.py        RUN/: config.yaml, metrics.jsonl, summary.json, checkpoints/, ... (RunDir, Summary)
    prepared.py   PREP/: clean/, rejected/, report.json (PreparedDir, PrepareReport)
    tokenized.py  TOK/: tokenizer.json, train/ and val/ shards, meta.json (read_meta, load_shards)
    sweep.py      SWEEP/: sweep.yaml, tokens/, runs/<name>/, points.csv, fit.json, plots/, verify/ (SweepDir)

Modules import the one they need (`from lmforge.folders.run import RunDir`): this file loads none of
them, so a cleaning worker that reads a prepared folder's names never loads the tokenizers library.
Opening a run's model (torch) is lmforge/open_run.py's, above training.
"""
