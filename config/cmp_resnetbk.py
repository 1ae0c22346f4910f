# Equal-budget comparison on WikiText-2 (gpt2 tokens), about 14M parameters each, the same wall-clock budget:
# config/cmp_gpt.py, config/cmp_newllm.py, config/cmp_resnetbk.py. ResNet-BK: 13,992,553 parameters (causal BK-Core).
model_type = 'resnetbk'
dataset = 'wikitext2-gpt2'
out_dir = 'out-cmp-resnetbk'
n_embd = 128
n_layer = 4
n_experts = 4
top_k = 1
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
