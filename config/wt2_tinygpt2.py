# The New-LLM seed's planned comparison model "TinyGPT2": n_embd 256, 6 layers, 4 heads, 64-token context, on the
# New-LLM seed's word-1000 WikiText-2 tokenization (so its token PPL is comparable with New-LLM's 23.34).
# 5,011,456 parameters (New-LLM has 2,739,432).
model_type = 'gpt'
dataset = 'wikitext2-word1000'
out_dir = 'out-wt2-tinygpt2'
n_layer = 6
n_head = 4
n_embd = 256
block_size = 64
dropout = 0.1
bias = True
batch_size = 64
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 5000
max_time = 1800.0
eval_interval = 250
eval_iters = 40
