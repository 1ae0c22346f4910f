# New-LLM (the seed's 2.74M model, unchanged) trained to the seed's val PPL 23.34 in 30 minutes on a 2-core CPU
# instead of ~7 hours: batch 128 random 63-token windows of the word-1000 stream, AdamW lr 5e-3 after 30 warm-up
# steps, cosine to 1e-4 over 3200 steps (about 30 min here), weight decay 0.01, clip 1.0, bf16 autocast. Val PPL is
# over the whole val split in 63-token windows, each from a zero context; eval.py --carry_state gives the streaming
# figure. Why lr 5e-3: with the seed's N(0, 0.02) init and no residuals the model first sits on a unigram plateau
# (loss ~4.2); the larger the step, the sooner it leaves it. 600-step probes (cosine over 600, README):
# val PPL 50.6 at lr 2e-3 / 200 warm-up steps, 40.4 at 3e-3, 36.7 at 5e-3, 34.3 at 5e-3 with 30 warm-up steps.
#   python train.py config/wt2_newllm.py
model_type = 'newllm'
dataset = 'wikitext2-word1000'
prepare_args = 'wikitext2 --tokenizer word --vocab_size 1000 --lowercase --line_format bos_eos --min_line_words 5'
out_dir = 'out-wt2-newllm'
batch_mode = 'random'
block_size = 63
n_embd = 256
n_hidden = 512
n_context = 256
n_layer = 6
dropout = 0.1
batch_size = 128
optimizer = 'adamw'
learning_rate = 5e-3
weight_decay = 0.01
beta2 = 0.99
decay_lr = True
lr_decay_iters = 3200
min_lr = 1e-4
warmup_iters = 30
grad_clip = 1.0
max_iters = 0
max_time = 1800.0
eval_interval = 250
eval_full = True
eval_iters = 10            # train-loss estimate only (val is the whole split)
