# The equal-size Transformer for config/wt2_resnetbk.py (the seed's "within 30% of a Transformer" check on a CPU):
# GPT with n_embd 112, 5 layers, 4,134,480 parameters vs ResNet-BK's 4,146,120, same data and training.
model_type = 'gpt'
dataset = 'wikitext2-word30000'
out_dir = 'out-wt2-resnetbk-gpt'
batch_size = 16
block_size = 128
max_epochs = 1
max_iters = 0
n_layer = 5
n_head = 4
n_embd = 112
bias = True
dropout = 0.1
optimizer = 'adamw'
learning_rate = 2e-3
weight_decay = 0.01
beta2 = 0.99
warmup_iters = 50
min_lr = 2e-4
grad_clip = 0.5
eval_interval = 200
eval_iters = 20
