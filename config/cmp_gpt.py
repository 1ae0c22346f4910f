# Equal-budget comparison on WikiText-2 (gpt2 tokens) sized for a 2-core CPU: about 3.4M parameters each (most of
# them the 50257-token embedding and head), the same wall-clock training budget (max_time):
# config/cmp_gpt.py, config/cmp_newllm.py, config/cmp_resnetbk.py. GPT: 3,421,824 parameters.
model_type = 'gpt'
dataset = 'wikitext2-gpt2'
out_dir = 'out-cmp-gpt'
n_layer = 4
n_head = 4
n_embd = 64
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
lr_decay_iters = 300       # cosine horizon (about the iterations of 300 s here); the run stops at max_time
max_time = 300.0
eval_interval = 100
eval_iters = 20
dtype = 'bfloat16'
