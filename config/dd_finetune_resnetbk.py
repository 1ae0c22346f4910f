# DailyDialog fine-tuning of the equal-budget WikiText-2 ResNet-BK (gpt2 tokens):
#   python train.py config/cmp_resnetbk.py config/dd_finetune_resnetbk.py              # from out-cmp-resnetbk/best.pt
#   python train.py config/cmp_resnetbk.py config/dd_finetune_resnetbk.py --init_from=scratch --out_dir=out-dd-resnetbk-scratch
dataset = 'dailydialog-gpt2'
init_from = 'out-cmp-resnetbk/best.pt'
out_dir = 'out-dd-resnetbk'
learning_rate = 5e-4
min_lr = 5e-5
lr_decay_iters = 600
warmup_iters = 50
max_iters = 0
max_time = 240.0
eval_interval = 50
eval_iters = 10
