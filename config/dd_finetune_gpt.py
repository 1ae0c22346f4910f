# DailyDialog fine-tuning of the WikiText-2 GPT. Name it after the pretraining config, which sets the architecture:
#   python train.py config/wt2_gpt.py config/dd_finetune_gpt.py                       # from out-wt2-gpt/best.pt
#   python train.py config/wt2_gpt.py config/dd_finetune_gpt.py --init_from=scratch --out_dir=out-dd-gpt-scratch
# Data (`python prepare.py dailydialog-gpt2`; gpt2 tokens: turns joined by "\n", <|endoftext|> after each dialogue).
dataset = 'dailydialog-gpt2'
init_from = 'out-wt2-gpt/best.pt'
out_dir = 'out-dd-gpt'
learning_rate = 5e-4       # a quarter of pretraining's
min_lr = 5e-5
lr_decay_iters = 600
warmup_iters = 50
max_iters = 0
max_time = 240.0           # the budget of both the fine-tuned and the from-scratch run
eval_interval = 50
eval_iters = 10
