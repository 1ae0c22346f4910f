# Equal-budget comparison on WikiText-2 (gpt2 tokens), about 14M parameters each, the same wall-clock budget:
# config/cmp_gpt.py, config/cmp_newllm.py, config/cmp_resnetbk.py. GPT: 14,472,704 parameters.
model_type = 'gpt'
dataset = 'wikitext2-gpt2'
out_dir = 'out-cmp-gpt'
n_layer = 2
n_head = 4
n_embd = 256
bias = False
dropout = 0.1
block_size = 128
batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
beta2 = 0.99
warmup_iters = 100
max_iters = 0
lr_decay_iters = 3000      # cosine horizon; the run stops at max_time
max_time = 600.0
eval_interval = 100
eval_iters = 20
dtype = 'bfloat16'
