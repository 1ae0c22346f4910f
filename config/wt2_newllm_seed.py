# The New-LLM seed's WikiText-2 run as it was (val PPL 23.34 after 27 epochs): the word-1000 vocabulary (lowercased,
# `<bos> words <eos>` per line), 64-token line windows each from a zero context, batch 32, Adam lr 1e-4 without
# decay, the seed's epoch clipping schedule, early stopping after 15 epochs without gain, at most 50 epochs; the whole
# val split (its 5,272 windows) evaluated once per epoch, snapshots every 5 epochs. ~7 h of training on a 2-core CPU.
#   python train.py config/wt2_newllm_seed.py
model_type = 'newllm'
dataset = 'wikitext2-word1000'
out_dir = 'out-wt2-newllm-seed'
batch_mode = 'seed_lines'
block_size = 63
n_embd = 256
n_hidden = 512
n_context = 256
n_layer = 6
dropout = 0.1
batch_size = 32
optimizer = 'adam'
learning_rate = 1e-4
beta1 = 0.9
beta2 = 0.999
weight_decay = 0.0
decay_lr = False
warmup_iters = 0
grad_clip_schedule = [(0, 0.5), (10, 1.0), (30, 2.0)]
max_iters = 0
max_epochs = 50
patience = 15
min_delta = 0.001
eval_interval = 0          # at the end of every epoch
eval_full = True
snapshot_every_epochs = 5
dtype = 'float32'
