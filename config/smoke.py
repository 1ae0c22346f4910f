# A three-minute end-to-end check on a 2-core CPU: a tiny GPT on WikiText-2 (gpt2 tokens). Not a real model.
model_type = 'gpt'
dataset = 'wikitext2-gpt2'
out_dir = 'out-smoke'
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
batch_size = 16
dropout = 0.0
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 20
max_iters = 150
eval_interval = 50
eval_iters = 10
log_interval = 10
