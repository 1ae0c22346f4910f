# The Transformer baseline of the ResNet-BK seed's requirement 9.1 ("perplexity within 30% of a Transformer"), never
# run by the seed: a GPT of (almost) equal size, 4,134,480 parameters vs ResNet-BK's 4,146,120 (-0.28%), trained
# exactly as config/wt103_resnetbk.py. GPT ties its embeddings, so at equal size it is wider: n_embd 112, 5 layers.
model_type = 'gpt'
dataset = 'wikitext103-word30000'
out_dir = 'out-wt103-resnetbk-gpt'
data_limit = 10_000_000
batch_size = 16
block_size = 128
max_epochs = 2
max_iters = 0
n_layer = 5
n_head = 4
n_embd = 112
bias = True
dropout = 0.1
optimizer = 'adamw'
learning_rate = 1e-3
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.999
warmup_iters = 0
decay_lr = True
min_lr = 1e-4
grad_clip = 0.5
eval_interval = 1000
eval_iters = 50
dtype = 'float32'           # the seed's precision, the same on both sides of the comparison
