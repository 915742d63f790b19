"""The help text of every command-line flag, one per config field (main.py defines
the flags from the config dataclasses; tests check the two name the same fields)."""

HELP = {
    "mode": "What to run.",
    "model_dir": "Where checkpoints, summaries, config.json and results.json go.",
    "train_epochs": "Training length in epochs of the train split (unless train_steps > 0).",
    "train_steps": "Training length in steps; overrides train_epochs when > 0.",
    "checkpoint_steps": "Save a checkpoint every this many steps (also the progress-bar loop).",
    "keep_checkpoints": "How many recent checkpoints to keep.",
    "init_checkpoint": "Pretraining checkpoint (file prefix or directory) to start "
    "linear_eval / finetune from.",
    "strategy": "default (all local devices), one_device, mirrored, multi_worker "
    "(reads TF_CONFIG) or tpu.",
    "num_logical_devices": "Use this many local devices; on a CPU-only host, split the CPU "
    "into that many logical devices (for testing).",
    "tpu": "TPU address for --strategy=tpu.",
    "precision": "auto (bf16 where the hardware runs it natively: AVX-512 BF16 or AMX "
    "CPUs, GPUs of compute capability 8.0+, TPUs; float16 on older tensor-core "
    "GPUs; else float32), float32, mixed_bfloat16 or mixed_float16.",
    "jit_compile": "Compile the train step with XLA (TPUs always do; on CPUs it is "
    "slower, BUILD.md).",
    "steps_per_execution": "Train steps per call into the compiled function, so the host "
    "is not waited on every step (0: auto, 32 on TPU and 1 elsewhere; lowered to divide "
    "--checkpoint_steps and the run's length).",
    "eval_steps": "Eval batches to use (0: the whole eval split).",
    "knn_every_epochs": "Run the kNN monitor every this many epochs while pretraining (0: "
    "only at the end).",
    "knn_k": "Neighbours for the kNN monitor.",
    "knn_temperature": "Vote temperature for the kNN monitor.",
    "knn_bank_size": "Train examples in the kNN feature bank.",
    "summary_steps": "Write TensorBoard scalars every this many steps.",
    "time_budget": "Train for this wall-clock time (e.g. 90s, 30m, 2h, 1h30m), "
    "evaluation included: the run times its first steps, plans the number of steps and "
    "sets warmup and cosine decay over them (replaces --train_epochs/--train_steps; the "
    "plan is logged and written to config.json).",
    "export_tflite": "--mode=export also writes the encoder for LiteRT / TensorFlow Lite "
    "(export_dir/tflite/: float32 and dynamic-range int8).",
    "export_dir": "Where --mode=export writes (default: model_dir/export).",
    "dataset": "A TFDS name (cifar10), folder:/path/to/images or tfrecord:/glob.",
    "data_dir": "TFDS data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).",
    "train_split": "Split to train on.",
    "eval_split": "Split to evaluate on (empty: no evaluation). Checked at start.",
    "image_size": "Side of the square network input in pixels.",
    "batch_size": "Global batch size (all replicas).",
    "eval_batch_size": "Global eval batch size.",
    "label_fraction": "Fraction of labels for finetune / linear_eval (class-balanced, e.g. "
    "0.01, 0.1); the ids chosen are written to model_dir/label_subset.txt.",
    "label_subset": "File of the example ids to train on, one per line (a run's "
    "label_subset.txt, or SimCLR's ImageNet 1percent.txt / 10percent.txt, "
    "matched by file name).",
    "seed": "Seed for weight initialisation, shuffling, augmentation and label subsets.",
    "deterministic": "Make the input pipeline deterministic (slower).",
    "cache": "Cache decoded examples in memory.",
    "strict_decoding": "Fail on a corrupt image instead of skipping and counting it.",
    "shuffle_buffer": "Examples in the shuffle buffer.",
    "depth": "ResNet depth: 18, 34, 50, 101, 152 or 200.",
    "width_multiplier": "ResNet width multiplier (fractional allowed).",
    "sk_ratio": "Selective-kernel ratio (SimCLRv2 uses 0.0625); 0 disables.",
    "cifar_stem": "3x3 stride-1 stem without max-pool (default: when image_size <= 32).",
    "sync_bn": "Synchronise batch-norm statistics across replicas (global BN).",
    "bn_momentum": "Batch-norm moving-average momentum.",
    "matmul_kernel_grad": "In bf16 on a CPU with AVX-512 BF16 and no AMX (where it was "
    "measured to pay), compute a conv's kernel gradient as one matmul "
    "over patches for small outputs (a ResNet's last stage on 32 px "
    "images). Off everywhere else whatever this says.",
    "proj_head_mode": "nonlinear, linear or none.",
    "num_proj_layers": "Layers of the nonlinear projection head (v1: 2, v2: 3).",
    "proj_out_dim": "Output width of the projection head.",
    "ft_proj_selector": "Projection-head layer the classifier reads (0: the encoder output).",
    "fine_tune_after_block": "Freeze the encoder up to this block group when fine-tuning "
    "(-1: train everything, 0: freeze the stem).",
    "linear_probe": "Train a stop-gradient linear probe during pretraining.",
    "crop": "Random resized crop.",
    "view_size": "Side of the pretraining views in pixels (0: --image_size); the "
    "encoder is still evaluated and exported at --image_size.",
    "area_range": "Crop area range, as a fraction of the image.",
    "aspect_range": "Crop aspect-ratio range.",
    "flip": "Random horizontal flip.",
    "color_jitter_strength": "Colour jitter strength s.",
    "color_jitter_prob": "Probability of colour jitter.",
    "jitter_version": "v1 (additive brightness) or v2 (multiplicative).",
    "grayscale_prob": "Probability of grayscale.",
    "blur_prob": "Probability of Gaussian blur (0 for CIFAR).",
    "rotation_prob": "Ablation: probability of a 90/180/270 rotation.",
    "cutout_prob": "Ablation: probability of cutout.",
    "noise_prob": "Ablation: probability of Gaussian noise.",
    "sobel_prob": "Ablation: probability of Sobel filtering.",
    "color_drop_prob": "Ablation: probability of colour drop.",
    "batched_augment": "Make the views over whole batches (same distribution, far fewer ops; "
    "mixed-size images are cropped one by one first). Off: image by image.",
    "augment_jit_compile": "Compile the batched views' pixel arithmetic with XLA (same "
    "views up to rounding, about half the input pipeline's CPU).",
    "loss": "nt_xent, nt_logistic or margin_triplet.",
    "temperature": "Contrastive temperature.",
    "hidden_norm": "L2-normalise projections before the loss.",
    "margin": "Margin of the margin-triplet loss.",
    "optimizer": "lars, momentum or adam.",
    "learning_rate": "Base learning rate, before batch-size scaling.",
    "lr_scaling": "linear (lr*B/256), sqrt (lr*sqrt(B)) or none.",
    "warmup_epochs": "Linear warmup length in epochs.",
    "weight_decay": "Weight decay (BN and biases excluded).",
    "allow_random_encoder": "linear_eval: train the probe on an untrained encoder when no "
    "--init_checkpoint is given (the random-init floor); otherwise that is refused.",
    "max_image_pixels": "Folder and TFRecord images whose header claims more pixels are "
    "skipped and counted (or fail the run with --strict_decoding) before decoding: a "
    "guard against decompression bombs. The default, 2^27 (134 MP), is above real photos.",
    "weight_decay_mode": "reference: decay as google-research/simclr applies it (LARS in "
    "its update plus an L2 term on the classifier kernel; momentum and adam: an L2 term "
    "on every non-BN variable in the loss). decoupled: the optimizer alone (LARS in its "
    "update, SGD and AdamW decoupled; classifiers not decayed).",
    "momentum": "Optimizer momentum.",
    "teacher": "--mode=distill: the frozen teacher, a classifier run directory "
    "(finetune, linear_eval, supervised, distill) or a SavedModel from --mode=export.",
    "distill_temperature": "--mode=distill: temperature of the teacher's and the student's "
    "softmax (SimCLRv2: 1 for a smaller student, 0.1 for self-distillation).",
    "distill_label_weight": "--mode=distill: weight of the cross-entropy on the labelled "
    "examples (--label_fraction / --label_subset); 0 reads no labels.",
}
