# The seeds' comparison (compare.py --task lm): the models of 2.74M parameters +-3% on the New-LLM seed's
# word-1000 WikiText-2, the same data, windows, schedule and token budget; only optimizer and learning_rate differ
# (compare.py's probe sweep). dtype and device: train.py's 'auto', which compare.py decides once and passes to
# every run.
# GPT (the New-LLM seed's planned TinyGPT2 at equal size): 5 layers, 6 heads of 34, tied embedding,
# 2,727,480 parameters (-0.4%).
model_type = 'gpt'
out_dir = 'out-cmp-gpt'
n_layer = 5
n_head = 6
n_embd = 204
bias = True
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
