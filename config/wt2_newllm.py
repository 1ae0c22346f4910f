# New-LLM, the seed's 2,739,432-parameter model unchanged (architecture, dropout 0.1, its N(0, 0.02) init), on the
# seed's word-1000 WikiText-2, trained 12.0M tokens (1,488 iterations): it reaches the seed's val PPL on the seed's own
# metric (23.34) after 11.0M tokens, 23.21 at the end (one seed; results/README.md): batch 128 random 63-token windows
# of the stream, Muon for the hidden matrices and AdamW for the embedding, head, biases and gains (optim.py), lr 7e-3
# after 30 warm-up steps, cosine to 1e-4 over the run, weight decay 0.01, clip 1.0. best.pt is chosen on the seed's
# metric (val_windows='lines': its line windows of the val split, each from a zero context); the stream-window PPL is
# recorded beside it.
# Why Muon: with the seed's init and no residuals, AdamW first sits on a unigram plateau (loss ~4.2) for hundreds of
# steps; Muon's orthogonalised updates leave it at once (300-iteration probes: results/cpu/newllm_probes_300.json).
# Why 7e-3: 1e-2 wins a 2.4M-token probe but over 12M tokens ends at 25.22 against 7e-3's 23.21; 2e-2 diverges.
#   python train.py config/wt2_newllm.py
model_type = 'newllm'
dataset = 'wikitext2-word1000'
out_dir = 'out-wt2-newllm'
batch_mode = 'random'
block_size = 63
n_embd = 256
n_hidden = 512
n_context = 256
n_layer = 6
dropout = 0.1
batch_size = 128
optimizer = 'muon'
learning_rate = 7e-3
weight_decay = 0.01
beta2 = 0.99
decay_lr = True
lr_decay_iters = 0         # the run's length
min_lr = 1e-4
warmup_iters = 30
grad_clip = 1.0
max_iters = 1488           # 12.0M tokens of 128 x 63
eval_interval = 124
eval_full = True
val_windows = 'lines'      # the seed's metric selects best.pt
eval_iters = 10            # train-loss estimate only (val is the whole split)
