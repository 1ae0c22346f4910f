# The seeds' comparison (compare.py --task lm): the models of 2.74M parameters +-3% on the New-LLM seed's
# word-1000 WikiText-2, the same data, windows, schedule and token budget; only optimizer and learning_rate differ
# (compare.py's probe sweep). dtype and device: train.py's 'auto', which compare.py decides once and passes to
# every run.
# Gated DeltaNet (the modern linear-time layer beside the seeds' designs): 3 blocks of D 256, 2 heads of 128 (a 128 x 128
# state per head), SwiGLU 640, tied embedding, 2,728,082 parameters (-0.4%).
model_type = 'gdn'
out_dir = 'out-cmp-gdn'
n_embd = 256
n_layer = 3
n_head = 2
head_dim = 128
mlp_hidden = 640
chunk_size = 16
dataset = 'wikitext2-word1000'
batch_mode = 'random'
block_size = 63            # the New-LLM seed's 64-token windows
batch_size = 128
dropout = 0.1
optimizer = 'adamw'        # compare.py sets optimizer, learning_rate and min_lr (= lr / 10) from its probe sweep
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.01
beta2 = 0.99
grad_clip = 1.0
warmup_iters = 30
decay_lr = True
lr_decay_iters = 0         # cosine over the whole run
max_iters = 496            # 4.0M tokens (compare.py sets it from --tokens)
eval_interval = 82
eval_full = True           # whole val split at every evaluation
eval_iters = 10            # train-loss estimate only
