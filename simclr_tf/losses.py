"""Contrastive objectives with negatives from every replica.

Each replica holds its local views `z1, z2 [n, d]`; in a replica context with more
than one replica they are gathered with `ReplicaContext.all_gather` (differentiable),
so every local anchor sees all 2N-2 negatives of the global batch. One
`[2n, 2N]` logits matrix is formed per replica (one 2N x 2N matrix in total).
The returned loss is the local mean; the train step divides by the replica count
once, which makes the summed gradients equal the single-device ones.
"""

import tensorflow as tf

LARGE_NUM = 1e9


def _gather(x, ctx):
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, tf.constant(0, tf.int32)
    return ctx.all_gather(x, axis=0), tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def contrastive_logits(z1, z2, temperature, normalize=True):
    """Similarity logits of the local 2n anchors against all 2N views.

    Returns `(logits [2n, 2N] with self-similarity masked out, positive index [2n],
    cross-view logits [n, N])`.
    """
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
    anchors = tf.concat([z1, z2], axis=0)  # [2n, d]
    candidates = tf.concat([z1_all, z2_all], axis=0)  # [2N, d]
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    own = tf.range(n) + replica * n  # index of each local view in its global half
    self_index = tf.concat([own, own + n_all], axis=0)
    positive = tf.concat([own + n_all, own], axis=0)
    logits -= LARGE_NUM * tf.one_hot(self_index, 2 * n_all, dtype=logits.dtype)
    return logits, positive, logits[:n, n_all:]


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


def nt_xent(z1, z2, temperature, normalize=True):
    """NT-Xent: softmax cross-entropy of each anchor's positive among 2N-1 others.

    Returns `(loss, metrics)`: the mean over the local 2n anchors and a dict with
    `contrast_acc` and `contrast_entropy` (over the cross-view logits).
    """
    logits, positive, cross = contrastive_logits(z1, z2, temperature, normalize)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(positive, logits)
    return tf.reduce_mean(per_anchor), _metrics(cross)


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
    return tf.reduce_mean(-tf.math.log_sigmoid(pos) - neg), _metrics(cross)


def margin_triplet(z1, z2, temperature=1.0, normalize=True, margin=1.0):
    """Margin triplet: mean over negatives of max(sim- - sim+ + margin, 0)."""
    logits, positive, cross = contrastive_logits(z1, z2, 1.0, normalize)
    pos_mask, neg_mask = _positive_and_negative_mask(logits, positive)
    pos = tf.reduce_sum(logits * pos_mask, axis=1, keepdims=True)
    hinge = tf.nn.relu(logits - pos + margin) * neg_mask
    loss = tf.reduce_sum(hinge, axis=1) / tf.reduce_sum(neg_mask, axis=1)
    return tf.reduce_mean(loss), _metrics(cross / temperature)


LOSSES = {"nt_xent": nt_xent, "nt_logistic": nt_logistic, "margin_triplet": margin_triplet}
