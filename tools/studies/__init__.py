"""SimCLR's own studies (augmentation composition, colour strength, projection head,
loss and temperature, batch size x training length) at CPU scale, resumable:

  python -m tools.studies --study=augmentation --data_dir=../shared/data/tfds \
      [--seeds=0,1] [--root=runs/studies] [--table_out=FILE.md]
      [--heatmap_out=FILE.png] [--curves_out=FILE.png]

Each cell is `flags/study_cpu.cfg` plus a few flags (tools/studies/grid.py), pretrained
once per seed in `ROOT/cells/<its flags>/seed_<n>`; every run is then measured the same
way (tools/studies/evaluate.py). Rerunning a study skips what is done.
"""
