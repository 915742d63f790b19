"""Benchmarks on real CIFAR-10 data: JSON out; a table appended to BENCHMARKS.md
only with --append. Run from the repository root, one module per mode:

  python -m tools.benchmark step   --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python -m tools.benchmark input  --data_dir=../shared/data/tfds --batch=256
  python -m tools.benchmark fit    --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python -m tools.benchmark budget --data_dir=../shared/data/tfds --width=0.25 --budget_minutes=30
  python -m tools.benchmark memory --data_dir=../shared/data/tfds --depth=50 --batch=256
  python -m tools.benchmark conv   --data_dir=../shared/data/tfds --width=1.0 --batch=256
  python -m tools.benchmark execution --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python -m tools.benchmark profile --data_dir=../shared/data/tfds --width=0.25 --batch=256
  python -m tools.benchmark peak

step:   the compiled train step alone on one real batch held in memory, for the project's
        PretrainModel, the plain Keras 3 baseline (tools/plain_keras_simclr.py) in this
        process and the plain PyTorch baseline (tools/plain_torch_simclr.py, if torch is
        installed) in its own; each in float32 and bf16; views/s, GFLOP/s, and shares of
        the nominal peak and of a 4096^3 matmul's rate (peak).
        --compare_kernel_grad also times the project's bf16 step with every conv's
        native kernel gradient (simclr_tf.models.conv's matmul path off).
input:  the tf.data augmentation pipeline alone; views/s and CPU ms per batch.
fit:    the real training path (pipeline + step + summaries + checkpoints), views/s, and
        the same compiled model's step alone, alternating --rounds times within one run,
        for fit / step (mean step times: the summary steps count; the checkpoint loops'
        end steps are timed apart and spread over --checkpoint_steps). Also the time
        per step outside the compiled function (Keras loop, callbacks) and how busy
        each phase keeps the cores.
budget: pretrain for --budget_minutes of wall clock (planned by the run itself, as
        --time_budget plans it, final kNN evaluation included) or exactly --steps, per
        precision in --precisions; then kNN (k=200, cosine) and linear-eval accuracy
        on the CIFAR-10 test split (in --eval_precision if given);
        the same for a random-init encoder (--norandom_init skips it).
memory: peak RSS of a train step (--depth/--width/--batch), and the loss's peak memory
        increase at --loss_batch, blockwise and with the whole 2N x 2N matrix.
conv:   per distinct conv shape of the encoder, its bf16 kernel gradient computed by
        TensorFlow's kernel and by simclr_tf.models.conv's patch matmul, on the activations and
        loss gradients of a real batch; which one simclr_tf.models.conv's rule picks.
execution: the training path with --steps_per_execution steps per compiled call against
        one per call, interleaved --rounds times (each --repeats steps); seconds per step.
search: exact top-8 neighbour queries (median and p90 ms over --search_queries) and a
        full near-duplicate scan (cosine >= 0.95) over tools/embed.py's embeddings in
        --embeddings_dir, as tools/similar.py runs them.
profile: the project's step under TensorFlow's profiler: thread-milliseconds per step of
        each op type, and its share of all op time (two executor threads run ops side
        by side, so shares compare op types; they are not fractions of the wall time).
peak:   GFLOP/s of a 4096^3 matmul per compute type (float32; bf16 where native) against
        the nominal peak at /proc/cpuinfo's clock; step's shares divide by the matmul's.
All modes take --depth/--width/--batch/--precisions/--xla/--devices (logical CPU devices).
Times are medians (fit: means) over --repeats timed steps after --warmup untimed ones;
input and fit also leave the first pass over the data untimed (--after_first_epoch).
"""
