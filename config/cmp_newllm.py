# Equal-budget comparison on WikiText-2 (gpt2 tokens), about 14M parameters each, the same wall-clock budget:
# config/cmp_gpt.py, config/cmp_newllm.py, config/cmp_resnetbk.py. New-LLM: 13,875,745 parameters.
model_type = 'newllm'
dataset = 'wikitext2-gpt2'
out_dir = 'out-cmp-newllm'
n_embd = 128
n_hidden = 144
n_context = 128
n_layer = 4
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
