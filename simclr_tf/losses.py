"""Contrastive objectives with negatives from every replica.

Each replica holds its local views `z1, z2 [n, d]`; in a replica context with more
than one replica they are gathered with `ReplicaContext.all_gather` (differentiable),
so every local anchor sees all 2N-2 negatives of the global batch. NT-Xent computes
its `[2n, 2N]` logits in blocks of `BLOCK_ROWS` anchors, forward and backward (a
custom gradient recomputes each block), so even a global batch of 8192 (a 16384 x
16384 matrix, 1 GiB in float32) never holds more than one block of it. The
ablation losses (NT-Logistic, margin triplet) form the whole `[2n, 2N]` matrix.

Every loss is on the reference implementation's scale: the mean over the local n
positive pairs of the sum of both directions' terms (a -> b and b -> a), i.e. twice
the mean over the 2n anchors. The scale matters: LARS' trust ratio cancels it for the
adapted weights but not for BN, biases and the heads, and plain momentum sees it
whole. The train step divides by the replica count once, which makes the summed
gradients equal the single-device ones.
"""

import typing

import tensorflow as tf

LARGE_NUM = 1e9
DIRECTIONS = 2.0  # per positive pair: a -> b plus b -> a (the reference's loss_a + loss_b)
BLOCK_ROWS = 1024  # anchors per logits block: 1024 x 2N floats (64 MiB at 2N = 16384)


def _gather(x, ctx):
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, tf.constant(0, tf.int32)
    return ctx.all_gather(x, axis=0), tf.cast(ctx.replica_id_in_sync_group, tf.int32)


class _Views(typing.NamedTuple):
    z1: tf.Tensor  # [n, d] local first views
    z2_all: tf.Tensor  # [N, d] every replica's second views
    anchors: tf.Tensor  # [2n, d] local views
    candidates: tf.Tensor  # [2N, d] all views
    positive: tf.Tensor  # [2n] column of each anchor's positive
    self_index: tf.Tensor  # [2n] column of each anchor itself


def _views(z1, z2, normalize):
    """Float32 (optionally normalised) views, gathered across replicas, with indices."""
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=-1)
        z2 = tf.math.l2_normalize(z2, axis=-1)
    ctx = tf.distribute.get_replica_context()
    z1_all, replica = _gather(z1, ctx)
    z2_all, _ = _gather(z2, ctx)
    n = tf.shape(z1)[0]
    n_all = tf.shape(z1_all)[0]
    own = tf.range(n) + replica * n  # index of each local view in its global half
    return _Views(
        z1,
        z2_all,
        tf.concat([z1, z2], axis=0),
        tf.concat([z1_all, z2_all], axis=0),
        tf.concat([own + n_all, own], axis=0),
        tf.concat([own, own + n_all], axis=0),
    )


def contrastive_logits(z1, z2, temperature, normalize=True):
    """Similarity logits of the local 2n anchors against all 2N views.

    Returns `(logits [2n, 2N] with self-similarity masked out, positive index [2n],
    cross-view logits [n, N])`.
    """
    v = _views(z1, z2, normalize)
    logits = tf.matmul(v.anchors, v.candidates, transpose_b=True) / temperature
    logits -= LARGE_NUM * tf.one_hot(v.self_index, tf.shape(v.candidates)[0], dtype=logits.dtype)
    n, n_all = tf.shape(v.z1)[0], tf.shape(v.z2_all)[0]
    return logits, v.positive, logits[:n, n_all:]


def _metrics(cross_logits):
    n = tf.shape(cross_logits)[0]
    ctx = tf.distribute.get_replica_context()
    replica = 0 if ctx is None else tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    labels = tf.range(n) + replica * n
    predicted = tf.argmax(cross_logits, axis=1, output_type=tf.int32)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))
    probs = tf.nn.softmax(cross_logits, axis=1)
    entropy = -tf.reduce_mean(tf.reduce_sum(probs * tf.math.log(probs + 1e-8), axis=1))
    return {"contrast_acc": accuracy, "contrast_entropy": entropy}


def _blocks(x, block):
    """[rows, ...] -> [blocks, block, ...], zero-padded at the end."""
    rows = tf.shape(x)[0]
    padded = (rows + block - 1) // block * block
    pad = [[0, padded - rows]] + [[0, 0]] * (x.shape.rank - 1)
    return tf.reshape(tf.pad(x, pad), tf.concat([[-1, block], tf.shape(x)[1:]], 0))


def _masked_logits(anchors, candidates, self_index, temperature):
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    columns = tf.range(tf.shape(candidates)[0])
    return tf.where(columns[None, :] == self_index[:, None], logits - LARGE_NUM, logits)


def _blockwise_cross_entropy(anchors, candidates, positive, self_index, temperature, block):
    """Per-anchor softmax cross-entropy of the positive, one block of rows at a time."""
    rows = tf.shape(anchors)[0]

    @tf.custom_gradient
    def cross_entropy(anchors, candidates):
        def forward(args):
            a, pos, own = args
            logits = _masked_logits(a, candidates, own, temperature)
            return tf.reduce_logsumexp(logits, axis=1) - tf.gather(
                logits, pos, axis=1, batch_dims=1
            )

        blocks = (_blocks(anchors, block), _blocks(positive, block), _blocks(self_index, block))
        per_anchor = tf.map_fn(
            forward, blocks, fn_output_signature=tf.float32, parallel_iterations=1
        )
        per_anchor = tf.reshape(per_anchor, [-1])[:rows]

        def grad(upstream):
            def backward(i, d_anchors, d_candidates):
                a, pos, own, g = (blocks[0][i], blocks[1][i], blocks[2][i], upstream_blocks[i])
                probs = tf.nn.softmax(_masked_logits(a, candidates, own, temperature))
                d_logits = (probs - tf.one_hot(pos, tf.shape(candidates)[0])) * (
                    g[:, None] / temperature
                )
                return (
                    i + 1,
                    d_anchors.write(i, tf.matmul(d_logits, candidates)),
                    d_candidates + tf.matmul(d_logits, a, transpose_a=True),
                )

            upstream_blocks = _blocks(upstream, block)
            count = tf.shape(upstream_blocks)[0]
            _, d_anchors, d_candidates = tf.while_loop(
                lambda i, *_: i < count,
                backward,
                (0, tf.TensorArray(tf.float32, size=count), tf.zeros_like(candidates)),
                parallel_iterations=1,
            )
            d_anchors = tf.reshape(d_anchors.stack(), [-1, tf.shape(anchors)[1]])[:rows]
            return d_anchors, d_candidates

        return per_anchor, grad

    return cross_entropy(anchors, candidates)


def _blockwise_metrics(z1, z2_all, temperature, block):
    """`_metrics` of the cross-view logits [n, N], a block of rows at a time."""
    ctx = tf.distribute.get_replica_context()
    replica = 0 if ctx is None else tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    n = tf.shape(z1)[0]
    labels = tf.range(n) + replica * n

    def per_row(args):
        a, label = args
        logits = tf.matmul(a, z2_all, transpose_b=True) / temperature
        correct = tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), label), tf.float32)
        probs = tf.nn.softmax(logits, axis=1)
        entropy = -tf.reduce_sum(probs * tf.math.log(probs + 1e-8), axis=1)
        return tf.stack([correct, entropy], axis=1)

    rows = tf.map_fn(
        per_row,
        (_blocks(tf.stop_gradient(z1), block), _blocks(labels, block)),
        fn_output_signature=tf.float32,
        parallel_iterations=1,
    )
    rows = tf.reshape(rows, [-1, 2])[:n]
    return {
        "contrast_acc": tf.reduce_mean(rows[:, 0]),
        "contrast_entropy": tf.reduce_mean(rows[:, 1]),
    }


def nt_xent(z1, z2, temperature, normalize=True, block_rows=BLOCK_ROWS):
    """NT-Xent: softmax cross-entropy of each anchor's positive among 2N-1 others.

    In a replica context the views of every replica are gathered, so each local anchor
    sees all 2N - 2 negatives of the global batch; the logits are formed `block_rows`
    anchors at a time, forward and backward.

    Args:
      z1, z2: float [n, d], the local batch's first and second views' projections
        (any float dtype; computed in float32).
      temperature: the softmax temperature tau (0.1 to 0.5 in the paper).
      normalize: L2-normalise z first (cosine similarity), as the paper does.
      block_rows: anchors per logits block (memory: block_rows x 2N floats).

    Returns:
      (loss, metrics): the float32 scalar mean over the local n pairs of both
      directions' cross-entropies (the reference's mean(loss_a + loss_b)), and
      {"contrast_acc", "contrast_entropy"} float32 scalars over the cross-view logits.
    """
    v = _views(z1, z2, normalize)
    per_anchor = _blockwise_cross_entropy(
        v.anchors, v.candidates, v.positive, v.self_index, temperature, block_rows
    )
    return (
        DIRECTIONS * tf.reduce_mean(per_anchor),
        _blockwise_metrics(v.z1, tf.stop_gradient(v.z2_all), temperature, block_rows),
    )


def _positive_and_negative_mask(logits, positive):
    positive_mask = tf.one_hot(positive, tf.shape(logits)[1], dtype=logits.dtype)
    negative_mask = tf.cast(logits > -LARGE_NUM / 2, logits.dtype) - positive_mask
    return positive_mask, negative_mask


def nt_logistic(z1, z2, temperature, normalize=True):
    """NT-Logistic: -log s(sim+/t) - mean over negatives of log s(-sim-/t)."""
    logits, positive, cross = contrastive_logits(z1, z2, temperature, normalize)
    pos_mask, neg_mask = _positive_and_negative_mask(logits, positive)
    pos = tf.reduce_sum(logits * pos_mask, axis=1)
    neg_terms = tf.math.log_sigmoid(-logits) * neg_mask
    neg = tf.reduce_sum(neg_terms, axis=1) / tf.reduce_sum(neg_mask, axis=1)
    return DIRECTIONS * tf.reduce_mean(-tf.math.log_sigmoid(pos) - neg), _metrics(cross)


def margin_triplet(z1, z2, temperature=1.0, normalize=True, margin=1.0):
    """Margin triplet: mean over negatives of max(sim- - sim+ + margin, 0)."""
    logits, positive, cross = contrastive_logits(z1, z2, 1.0, normalize)
    pos_mask, neg_mask = _positive_and_negative_mask(logits, positive)
    pos = tf.reduce_sum(logits * pos_mask, axis=1, keepdims=True)
    hinge = tf.nn.relu(logits - pos + margin) * neg_mask
    loss = tf.reduce_sum(hinge, axis=1) / tf.reduce_sum(neg_mask, axis=1)
    return DIRECTIONS * tf.reduce_mean(loss), _metrics(cross / temperature)


LOSSES = {"nt_xent": nt_xent, "nt_logistic": nt_logistic, "margin_triplet": margin_triplet}


def distillation_loss(teacher_logits, student_logits, temperature=1.0):
    """SimCLRv2's distillation loss (paper section 2, eq. 2): the cross-entropy of the
    student's tempered softmax against the teacher's.

    Args:
      teacher_logits: float [B, classes], the (frozen) teacher's logits.
      student_logits: float [B, classes].
      temperature: tau of both softmaxes (SimCLRv2: 1 big-to-small, 0.1 self-distillation).

    Returns:
      float32 scalar: the mean over the batch of
      -sum_y softmax(teacher / tau)_y * log softmax(student / tau)_y.
    """
    teacher = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    log_student = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / temperature, axis=-1)
    return tf.reduce_mean(-tf.reduce_sum(tf.stop_gradient(teacher) * log_student, axis=-1))
