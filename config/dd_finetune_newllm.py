# DailyDialog fine-tuning of the WikiText-2 New-LLM, on the same word-1000 vocabulary:
#   python train.py config/wt2_newllm.py config/dd_finetune_newllm.py                 # from out-wt2-newllm/best.pt
#   python train.py config/wt2_newllm.py config/dd_finetune_newllm.py --init_from=scratch --out_dir=out-dd-newllm-scratch
# (the seed's own fine-tuning rebuilt the vocabulary, failed to load the checkpoint and silently trained from scratch;
# here a vocabulary or shape mismatch is an error)
dataset = 'dailydialog-word1000'
init_from = 'out-wt2-newllm/best.pt'
out_dir = 'out-dd-newllm'
learning_rate = 5e-4
min_lr = 5e-5
decay_lr = True
lr_decay_iters = 1000
warmup_iters = 50
max_iters = 0
max_epochs = 0
max_time = 240.0           # the budget of both the fine-tuned and the from-scratch run
patience = 0
eval_interval = 50
eval_iters = 10
eval_full = False
