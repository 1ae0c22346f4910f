# The New-LLM seed's "advanced" model for a GPU: n_context 512, n_layer 12 (H 512, E 256), 4,840,936 parameters, on
# the seed's word-1000 WikiText-2, bf16 autocast. The per-token loop is launch-bound on a GPU (an iteration costs about
# the same from batch 64 to 2048), so the batch is large: 512 random 63-token windows of the stream, AdamW 2e-3 with
# cosine decay over 6000 iterations (~92 epochs of the 2.1M-token stream; best.pt keeps the best val, patience stops
# a run that overfits). On an H100 an iteration took ~105 ms (~300k tok/s): 6000 iterations ~ 11 min plus evals.
# Val PPL: whole val split in 63-token windows, each from a zero context. (The seed's own GPU runs: fp16, batch 2048,
# lr 8e-4, 26.03 after 50 epochs and 20.60 after 150.)
#   python train.py config/wt2_newllm_gpu.py
model_type = 'newllm'
dataset = 'wikitext2-word1000'
out_dir = 'out-wt2-newllm-gpu'
batch_mode = 'random'
block_size = 63
n_embd = 256
n_hidden = 512
n_context = 512
n_layer = 12
dropout = 0.1
batch_size = 512
optimizer = 'adamw'
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
beta2 = 0.99
decay_lr = True
warmup_iters = 200
lr_decay_iters = 6000
grad_clip = 1.0
max_iters = 6000
eval_interval = 250
eval_full = True
eval_iters = 10            # train-loss estimate only (val is the whole split)
patience = 8               # evaluations (2000 iterations) without a new best
