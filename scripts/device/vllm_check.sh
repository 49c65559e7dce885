#!/usr/bin/env bash
# The vllm backend against real vLLM, on a machine with an NVIDIA GPU: installs vLLM into its own
# virtualenv (vLLM pins its own torch, numpy and fastapi; never the project's venv), serves one small
# model twice on loopback (two servers: vLLM runs one model per process, and the tests need two LLM
# versions), then runs the same tests the CI runs against llama.cpp -- the llm-slot contract kit, the
# several-servers test and the LLM deployment tests (openai client -> ml-service -> vLLM) -- with
# MATIH_LLM_SERVERS pointing them at vLLM. Tests that stop a server start a llama.cpp one of their
# own and skip here.
#
#   scripts/device/vllm_check.sh [MODEL]     MODEL: a Hugging Face id or a local folder
#                                            (default Qwen/Qwen2.5-0.5B-Instruct; $VLLM_MODEL)
# Environment: VLLM_VERSION (pip spec, default: the newest), VLLM_VENV (default .venv-vllm),
# GPU_MEMORY_UTILIZATION (per server, default 0.35), HF_HOME (weights cache). A machine without
# network needs the weights in a local folder (MODEL=/path) and a package index it can reach.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL="${1:-${VLLM_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}}"
VENV="${VLLM_VENV:-.venv-vllm}"
UTIL="${GPU_MEMORY_UTILIZATION:-0.35}"
LOGS="$(mktemp -d -t vllm-check-XXXXXX)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader \
  || { echo "vllm_check: no NVIDIA GPU here (nvidia-smi not found); vLLM needs one" >&2; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "vllm${VLLM_VERSION:+==$VLLM_VERSION}"
# The project on top of vLLM's stack: the core, the backend, the openai client and the test tools (not the
# core's whole test extra: mlflow and tritonclient are not needed here and would fight vLLM's pins).
python -m pip install --quiet -e . -e backends/vllm openai pyyaml "pytest>=8" pytest-timeout "hypothesis>=6.100"
python -c "import vllm, sys; print('vllm', vllm.__version__, 'python', sys.version.split()[0])"

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
stop_servers() {  # by the PIDs started here, never by name
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  sleep 5
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap stop_servers EXIT

SERVERS=""
for alias in smollm2-a smollm2-b; do  # the aliases the tests know; the model behind them is $MODEL
  port="$(free_port)"
  setsid vllm serve "$MODEL" --host 127.0.0.1 --port "$port" --served-model-name "$alias" \
    --max-model-len 2048 --gpu-memory-utilization "$UTIL" --max-num-seqs 32 --seed 0 \
    >"$LOGS/$alias.log" 2>&1 &
  PIDS+=("$!")
  SERVERS="${SERVERS:+$SERVERS,}$alias=http://127.0.0.1:$port"
  # One at a time: two engines profiling GPU memory at once misjudge what is free.
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; then break; fi
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then echo "vllm serve $alias exited:" >&2; tail -50 "$LOGS/$alias.log" >&2; exit 1; fi
    sleep 1
  done
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null || { echo "vllm serve $alias not up after 600 s" >&2; tail -50 "$LOGS/$alias.log" >&2; exit 1; }
  echo "vllm serving $MODEL as $alias on 127.0.0.1:$port"
done

export MATIH_LLM_SERVERS="$SERVERS"
set +e
rc=0
python -m pytest -p no:cacheprovider -q -rs backends/vllm/tests/test_vllm_backend.py -k "not goes_down" || rc=1
python -m pytest -p no:cacheprovider -q -rs tests/serving/test_llm_deployments.py tests/serving/test_llm_flavor.py \
  -k "not goes_down" || rc=1
set -e
echo "vllm_check: pytest exited $rc; server logs in $LOGS"
exit "$rc"
