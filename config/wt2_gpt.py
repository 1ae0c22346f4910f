# A small GPT baseline for a 2-core CPU on WikiText-2 with the GPT-2 tokenizer (7,236,864 parameters, 6.4M of them
# the tied 50257 x 128 embedding). Evaluated on random val batches during training; the whole val split at the end.
model_type = 'gpt'
dataset = 'wikitext2-gpt2'
out_dir = 'out-wt2-gpt'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.1
bias = False
batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
beta2 = 0.99
warmup_iters = 100
max_iters = 3000
eval_interval = 250
eval_iters = 40
