# Sourced by the one-command GPU lease scripts (gpu_molecules.sh, gpu_tables.sh) after OUT is set:
# a clock, unbuffered logging of everything into $OUT/lease.log, the device in the log, and the
# parser's C driver built in place (the checkout is not installed there).
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TQDM_MININTERVAL=30
mkdir -p "$OUT"
exec > >(tee -a "$OUT/lease.log") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
python3 setup.py build_ext --inplace -q > /tmp/build.log 2>&1 && echo "C parser built" \
  || echo "C parser not built (pure-Python driver); $(tail -1 /tmp/build.log)"
