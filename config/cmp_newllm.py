# The seeds' comparison (compare.py --task lm): the models of 2.74M parameters +-3% on the New-LLM seed's
# word-1000 WikiText-2, the same data, windows, schedule and token budget; only optimizer and learning_rate differ
# (compare.py's probe sweep). dtype and device: train.py's 'auto', which compare.py decides once and passes to
# every run.
# New-LLM: the seed's model unchanged, 2,739,432 parameters (the reference size).
model_type = 'newllm'
out_dir = 'out-cmp-newllm'
n_embd = 256
n_hidden = 512
n_context = 256
n_layer = 6
dataset = 'wikitext2-word1000'
batch_mode = 'random'
block_size = 63            # the New-LLM seed's 64-token windows
batch_size = 128
dropout = 0.1
optimizer = 'adamw'        # compare.py sets optimizer, learning_rate and min_lr (= lr / 10) from its probe sweep
learning_rate = 5e-3
min_lr = 5e-4
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
