# One GPU lease (~8.5 min of training): gmm then a gan on it, cae and rnn beside them, all on one GPU;
# slim fp32 weights + logs to $OUT (tools/gpu/collect.py), also every 2 minutes in case the call is cut.
# Prepared by tools/gpu/prepare.py; run through the device tool from the repository root:
#     command: S=100 bash tools/gpu/train.sh      carry: [".gpu"]      timeout_s: 600
# then tools/gpu/import_runs.py FILES_AT --export. Each trainer stops on SIGTERM with a checkpoint.
G=${G:-.gpu}; S=${S:-100}   # S: percent of the time budget (local dry runs use less)
GAN=${GAN:-1}   # GAN=0: no new gan this lease, gmm trains the whole time (the shipped gan keeps its own gmm copy)
CAE=${CAE:-1}   # CAE=0: leave cae out (its curve has flattened), the others get its share of the GPU
RNN=${RNN:-1}   # RNN=0: leave rnn out (pack without it), gmm and cae get its share of the GPU
CAE_ARGS=${CAE_ARGS:---crop 256 --batch 16 --lr 3e-4}   # e.g. --lr 1e-4: a decay step once the curve flattens
GMM_ARGS=${GMM_ARGS:---crop 256 --batch 16 --lr 3e-4}   # e.g. --lr 1e-4 once the curve flattens
RNN_ARGS=${RNN_ARGS:---crop 32 --batch 128}   # plus e.g. --binariser hard --loss mse to continue such a run
RNN_B_ARGS=${RNN_B_ARGS:-}   # set: a second rnn run beside the first (runs/rnn-b), to be averaged (tools/average_runs.py)
GMM_B_ARGS=${GMM_B_ARGS:-}   # set: a second gmm run beside the first (runs/gmm-b, e.g. another widening), 500 s, to compare
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $G/whl/*.whl; export PYTHONPATH=/tmp/site:$PWD
mkdir -p $G/logs; L=$G/logs
nvidia-smi -L; python3 -c "import torch, mlimg; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > $L/smi.csv 2>&1 &)
D=$G/bsds500; K=$G/kodak; T0=$(date +%s)
t() { echo $(( $1 * S / 100 )); }
GMM_S=$(t 290); [ "$GAN" = 0 ] && GMM_S=$(t 500)
( timeout -s TERM $GMM_S python3 -m mlimg train gmm --data $D --kodak $K --out $G/runs/gmm $GMM_ARGS --eval-every 1000 --checkpoint-every 60 > $L/gmm.out 2>&1
  echo "gmm exit $?" >> $L/gmm.out
  left=$(( $(t 500) - ($(date +%s) - T0) ))
  [ "$GAN" = 0 ] && exit 0
  timeout -s TERM $left python3 -m mlimg train gan --base $G/runs/gmm --data $D --kodak $K --out $G/runs/gan --crop 256 --batch 8 --checkpoint-every 60 > $L/gan.out 2>&1
  echo "gan exit $?" >> $L/gan.out ) & P1=$!
[ "$CAE" = 1 ] && ( timeout -s TERM $(t 500) python3 -m mlimg train cae --data $D --kodak $K --out $G/runs/cae $CAE_ARGS --eval-every 1000 --checkpoint-every 60 > $L/cae.out 2>&1; echo "cae exit $?" >> $L/cae.out ) & P2=$!
[ "$CAE" = 1 ] || P2=
rnn_run() {  # rnn_run NAME OPTIONS...: one rnn trainer into $G/runs/NAME, log $L/NAME.out
  local name=$1; shift
  timeout -s TERM $(t 500) python3 -m mlimg.train_rnn --data $D --out $G/runs/$name "$@" --checkpoint-every 60 > $L/$name.out 2>&1
  echo "$name exit $?" >> $L/$name.out
}
P3=; [ "$RNN" = 1 ] && { rnn_run rnn $RNN_ARGS & P3=$!; }
P4=; [ -n "$RNN_B_ARGS" ] && { rnn_run rnn-b $RNN_B_ARGS & P4=$!; }
P5=; [ -n "$GMM_B_ARGS" ] && { ( timeout -s TERM $(t 500) python3 -m mlimg train gmm --data $D --kodak $K --out $G/runs/gmm-b $GMM_B_ARGS --eval-every 1000 --checkpoint-every 60 > $L/gmm-b.out 2>&1; echo "gmm-b exit $?" >> $L/gmm-b.out ) & P5=$!; }
( while sleep $(t 120); do python3 tools/gpu/collect.py $G $OUT > $L/collect.out 2>&1; done ) &
CP=$!
wait $P1 $P2 $P3 $P4 $P5
kill $CP 2>/dev/null
python3 tools/gpu/collect.py $G $OUT; tail -n 4 $L/*.out; tail -n 5 $L/smi.csv; echo "total $(( $(date +%s) - T0 )) s"
