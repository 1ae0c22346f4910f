# The ResNet-BK seed's WikiText-103 experiment (seeds/README.md; seed PPL 982.11, a training PPL with misaligned
# targets), rerun correctly: causal BK-Core, exact gradients, a learning router, targets aligned, whole-split val.
# 4,146,120 parameters. Data: `python prepare.py wikitext103-word30000`
# (case-sensitive whitespace words, <unk> + 29,999 most common, lines concatenated). Compare with
# config/wt103_resnetbk_gpt.py, the Transformer of equal size the seed's "within 30%" requirement asks for.
model_type = 'resnetbk'
dataset = 'wikitext103-word30000'
out_dir = 'out-wt103-resnetbk'
data_limit = 10_000_000     # the seed's first 10M train tokens
batch_size = 16
block_size = 128
max_epochs = 2
max_iters = 0               # the run length is max_epochs
n_embd = 64
n_layer = 4
n_experts = 4
top_k = 1
dropout = 0.1
bk_causal = True
optimizer = 'adamw'
learning_rate = 1e-3
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.999               # torch's AdamW default, as the seed
warmup_iters = 0
decay_lr = True             # per-step cosine to lr/10 over the run
min_lr = 1e-4
grad_clip = 0.5
eval_interval = 1000
eval_iters = 50
dtype = 'float32'           # the seed's precision, the same on both sides of the comparison
