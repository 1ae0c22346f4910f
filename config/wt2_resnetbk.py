# ResNet-BK at the seed's size (4,146,120 parameters) on WikiText-2 for a 2-core CPU: the seed's word-30000
# case-sensitive tokenization of WikiText-2 (`python prepare.py wikitext2-word30000`),
# one epoch (1,002 steps of 2048 tokens). The run's dtype sets the dense parts' precision (the BK-Core stays
# float32/complex64); the seed's use_mixed_precision=True is dtype='bfloat16'.
model_type = 'resnetbk'
dataset = 'wikitext2-word30000'
out_dir = 'out-wt2-resnetbk'
batch_size = 16
block_size = 128
max_epochs = 1
max_iters = 0
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
