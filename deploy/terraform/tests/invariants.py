#!/usr/bin/env python3
"""Invariants of Slipway's Terraform that no generic scanner checks.

    invariants.py [ROOT]      check every .tf file under ROOT (default: deploy/terraform)
    invariants.py --self-test feed deliberately bad snippets and assert each one is caught

What is checked:
  1. every aws_launch_template has metadata_options with http_tokens = "required" and
     http_put_response_hop_limit = 1 (literal values: an expression cannot be verified);
  2. no security-group rule or inline ingress block that may admit port 5432 has any source
     but the nodes' security group (never a CIDR, a prefix list, `self`, another group);
  3. every ECR lifecycle policy (and repository creation template) only ever expires
     UNTAGGED images, and is written so that this can be verified (a local object);
  4. IAM: every policy is an aws_iam_policy_document (or a role policy built from one); no
     Allow statement has a wildcard action (`*`, `service:*`, `s3:Get*`); no statement has a
     wildcard action and a `*` resource together; `*` resources only carry actions without
     resource-level permissions (ALLOWED_STAR_ACTIONS), in statements whose sid says so
     (…NoResourceLevelPermissions), ecr:GetAuthorizationToken alone in its statement; no
     NotAction / NotResource; no Allow for a `*` principal; managed policies only from
     ALLOWED_MANAGED_POLICIES. In a KMS key policy `*` is the key itself and is allowed as a
     resource (wildcard actions are not). When policy_sentry (a checkov dependency) can be
     imported, every action must exist in its copy of the Service Authorization Reference and
     every action on `*` must really lack resource-level permissions there;
  5. every security-group rule and inline ingress/egress block has a description.

Values are read with python-hcl2. Where a value is an expression, the checker resolves
`local.*` and `var.*` (defaults) of the same module and otherwise takes every string
literal and reference in the expression as a conservative superset; a port it cannot
resolve counts as "may be 5432".
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
from hcl2.utils import SerializationOptions

# Actions that have no resource-level permissions, and so may (only) be granted on "*".
ALLOWED_STAR_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "ec2:DescribeInstances",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
}
ALONE_ON_STAR = "ecr:GetAuthorizationToken"
STAR_SID_MARK = "NoResourceLevelPermissions"
ALLOWED_MANAGED_POLICIES = {
    "service-role/AmazonRDSEnhancedMonitoringRole",
}
# The expressions that denote the swarm nodes' security group.
NODE_SG_REFS = {"aws_security_group.nodes.id", "var.nodes_security_group_id"}
DB_PORT = 5432

# How much each check looked at: a run over the real tree that looked at nothing (a parser
# whose output changed shape, say) must fail rather than pass vacuously.
SEEN = {"launch templates": 0, "security groups and rules": 0, "ECR lifecycle policies": 0, "IAM statements": 0}

OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=True, preserve_heredocs=False)
STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
REFERENCE = re.compile(r"\b(local|var)\.([A-Za-z_][A-Za-z0-9_-]*)")


# --- reading HCL --------------------------------------------------------------------------


def literal(value):
    """The Python value of an HCL literal, or None when it is an expression."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"') and "${" not in value:
            return json.loads(value) if "\\" in value else value[1:-1]
        return None
    return None


def clean(value):
    """Strip python-hcl2's block markers, recursively."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def unquote(label: str) -> str:
    return label[1:-1] if label.startswith('"') and label.endswith('"') else label


@dataclass
class Module:
    path: Path
    resources: list = field(default_factory=list)  # (type, name, body, file)
    data: list = field(default_factory=list)
    locals: dict = field(default_factory=dict)
    variables: dict = field(default_factory=dict)  # name -> default (raw) or None


def load_modules(root: Path) -> tuple[dict[Path, Module], list[str]]:
    modules: dict[Path, Module] = {}
    errors = []
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        try:
            parsed = hcl2.loads(path.read_text(), serialization_options=OPTIONS)
        except Exception as error:  # noqa: BLE001 - any parse failure is a finding
            errors.append(f"{path}: does not parse: {error}")
            continue
        module = modules.setdefault(path.parent, Module(path.parent))
        for block in parsed.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    module.resources.append((unquote(rtype), unquote(name), clean(body), path))
        for block in parsed.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    module.data.append((unquote(dtype), unquote(name), clean(body), path))
        for block in parsed.get("locals", []):
            module.locals.update(clean(block))
        for block in parsed.get("variable", []):
            for name, body in block.items():
                body = clean(body)
                module.variables[unquote(name)] = body.get("default")
    return modules, errors


def blocks(body: dict, name: str) -> list[dict]:
    found = body.get(name, [])
    return found if isinstance(found, list) else [found]


def expand(module: Module, value, depth=0) -> list:
    """Every value an attribute may take: literals as they are, lists flattened, locals and
    variable defaults resolved, and for any other expression every string literal and every
    resolvable reference in it (a superset)."""
    if depth > 10:
        return []
    if isinstance(value, list):
        out = []
        for item in value:
            out.extend(expand(module, item, depth + 1))
        return out
    lit = literal(value)
    if lit is not None:
        return [lit]
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, str):
        return []
    expression = value[2:-1] if value.startswith("${") and value.endswith("}") else value
    out = [json.loads(f'"{s}"') for s in STRING_LITERAL.findall(expression)]
    for kind, name in REFERENCE.findall(expression):
        source = module.locals if kind == "local" else module.variables
        if name in source and source[name] is not None:
            out.extend(expand(module, source[name], depth + 1))
    return out


def resolve_number(module: Module, value):
    """A port number, or None when it cannot be resolved."""
    lit = literal(value)
    if isinstance(lit, (int, float)):
        return int(lit)
    if isinstance(lit, str) and lit.lstrip("-").isdigit():
        return int(lit)
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{(local|var)\.([A-Za-z_][A-Za-z0-9_-]*)\}", value)
        if match:
            source = module.locals if match.group(1) == "local" else module.variables
            if source.get(match.group(2)) is not None:
                return resolve_number(module, source[match.group(2)])
    return None


def reference(value) -> str | None:
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1].strip()
    return None


# --- 1. launch templates ---------------------------------------------------------------------


def check_launch_templates(module: Module, findings: list):
    for rtype, name, body, path in module.resources:
        if rtype != "aws_launch_template":
            continue
        where = f"{path}: aws_launch_template.{name}"
        SEEN["launch templates"] += 1
        options = blocks(body, "metadata_options")
        if len(options) != 1:
            findings.append(f"{where}: needs exactly one metadata_options block (IMDSv2, hop limit 1)")
            continue
        tokens = literal(options[0].get("http_tokens"))
        if tokens != "required":
            findings.append(f'{where}: metadata_options.http_tokens must be the literal "required", not {options[0].get("http_tokens")!r}')
        hops = options[0].get("http_put_response_hop_limit")
        if literal(hops) != 1:
            findings.append(f"{where}: metadata_options.http_put_response_hop_limit must be the literal 1, not {hops!r}")


# --- 2. port 5432 ------------------------------------------------------------------------------


def may_cover_db_port(module: Module, protocol, from_port, to_port) -> bool:
    proto = literal(protocol)
    if proto is not None and str(proto) in ("-1", "all"):
        return True
    if proto is not None and str(proto).lower() not in ("tcp", "6"):
        return False
    low, high = resolve_number(module, from_port), resolve_number(module, to_port)
    if low is None or high is None:
        return True
    return low <= DB_PORT <= high


def check_db_port(module: Module, findings: list):
    for rtype, name, body, path in module.resources:
        where = f"{path}: {rtype}.{name}"
        if rtype in ("aws_vpc_security_group_ingress_rule", "aws_security_group_rule", "aws_security_group"):
            SEEN["security groups and rules"] += 1
        if rtype == "aws_vpc_security_group_ingress_rule":
            if not may_cover_db_port(module, body.get("ip_protocol"), body.get("from_port"), body.get("to_port")):
                continue
            for key in ("cidr_ipv4", "cidr_ipv6", "prefix_list_id"):
                if key in body:
                    findings.append(f"{where}: may admit port {DB_PORT} from {key} {body[key]!r}; only the nodes' security group may")
            ref = reference(body.get("referenced_security_group_id"))
            if "referenced_security_group_id" in body and ref not in NODE_SG_REFS:
                findings.append(f"{where}: may admit port {DB_PORT} from {body['referenced_security_group_id']!r}, not the nodes' security group")
            if not any(k in body for k in ("cidr_ipv4", "cidr_ipv6", "prefix_list_id", "referenced_security_group_id")):
                findings.append(f"{where}: ingress rule without a source")
        elif rtype == "aws_security_group_rule":
            if literal(body.get("type")) != "ingress":
                continue
            if not may_cover_db_port(module, body.get("protocol"), body.get("from_port"), body.get("to_port")):
                continue
            check_legacy_sources(body, where, findings)
        elif rtype == "aws_security_group":
            for index, rule in enumerate(blocks(body, "ingress")):
                if may_cover_db_port(module, rule.get("protocol"), rule.get("from_port"), rule.get("to_port")):
                    check_legacy_sources(rule, f"{where} ingress[{index}]", findings)


def check_legacy_sources(rule: dict, where: str, findings: list):
    for key in ("cidr_blocks", "ipv6_cidr_blocks", "prefix_list_ids"):
        if rule.get(key) not in (None, [], "${[]}"):
            findings.append(f"{where}: may admit port {DB_PORT} from {key} {rule[key]!r}; only the nodes' security group may")
    if literal(rule.get("self")) is True or (rule.get("self") is not None and literal(rule.get("self")) is None):
        findings.append(f"{where}: may admit port {DB_PORT} from the group itself (self)")
    sources = rule.get("security_groups", [])
    sources = sources if isinstance(sources, list) else [sources]
    if "source_security_group_id" in rule:
        sources = sources + [rule["source_security_group_id"]]
    for source in sources:
        if reference(source) not in NODE_SG_REFS:
            findings.append(f"{where}: may admit port {DB_PORT} from {source!r}, not the nodes' security group")


# --- 3. ECR lifecycle ------------------------------------------------------------------------


def lifecycle_document(module: Module, value):
    """The policy as a Python object, when it is verifiable: jsonencode(local.X) or a JSON
    string literal or heredoc without interpolation."""
    ref = reference(value)
    if ref:
        match = re.fullmatch(r"jsonencode\(\s*local\.([A-Za-z_][A-Za-z0-9_-]*)\s*\)", ref)
        if match and match.group(1) in module.locals:
            return module.locals[match.group(1)]
        return None
    lit = literal(value)
    if isinstance(lit, str):
        try:
            return json.loads(lit)
        except ValueError:
            return None
    return None


def check_ecr_lifecycle(module: Module, findings: list):
    for rtype, name, body, path in module.resources:
        attribute = {"aws_ecr_lifecycle_policy": "policy", "aws_ecr_repository_creation_template": "lifecycle_policy"}.get(rtype)
        if not attribute or attribute not in body:
            continue
        where = f"{path}: {rtype}.{name}"
        SEEN["ECR lifecycle policies"] += 1
        document = lifecycle_document(module, body[attribute])
        if not isinstance(document, dict):
            findings.append(f"{where}: {attribute} cannot be verified; write it as jsonencode(local.<object>)")
            continue
        rules = document.get("rules")
        if not isinstance(rules, list) or not rules:
            findings.append(f"{where}: lifecycle policy without rules")
            continue
        for index, rule in enumerate(rules):
            selection = rule.get("selection", {}) if isinstance(rule, dict) else {}
            status = literal(selection.get("tagStatus")) if isinstance(selection, dict) else None
            if status != "untagged":
                findings.append(f"{where}: rule {index} selects tagStatus {selection.get('tagStatus')!r}; only untagged images may ever be expired (Slipway pins tagged digests)")


# --- 4. IAM ------------------------------------------------------------------------------------


def key_policy_documents(module: Module) -> set[str]:
    names = set()
    for rtype, _, body, _ in module.resources:
        if rtype == "aws_kms_key":
            ref = reference(body.get("policy"))
            match = ref and re.fullmatch(r"data\.aws_iam_policy_document\.([A-Za-z0-9_-]+)\.json", ref)
            if match:
                names.add(match.group(1))
    return names


def statements(document: dict) -> list[dict]:
    found = list(blocks(document, "statement"))
    for dynamic in blocks(document, "dynamic"):
        for label, body in dynamic.items():
            if unquote(label) == "statement":
                found.extend(blocks(body, "content"))
    return found


def is_wildcard_action(action: str) -> bool:
    return "*" in action or "?" in action


_IAM_DATABASE: dict = {}


def iam_resource_types(action: str):
    """The resource ARN formats of an action in policy_sentry's copy of the Service
    Authorization Reference (installed with checkov): None when the action is unknown, and
    {"*"} for an action without resource-level permissions. Returns "unavailable" when
    policy_sentry cannot be imported (the check is then skipped, and said so)."""
    if "available" not in _IAM_DATABASE:
        try:
            from policy_sentry.querying.actions import get_action_data  # noqa: PLC0415

            _IAM_DATABASE["available"] = get_action_data
        except Exception:  # noqa: BLE001
            _IAM_DATABASE["available"] = None
    query = _IAM_DATABASE["available"]
    if query is None:
        return "unavailable"
    if action not in _IAM_DATABASE:
        service, _, name = action.partition(":")
        try:
            data = query(service, name) or {}
        except Exception:  # noqa: BLE001
            data = {}
        rows = data.get(service) or []
        _IAM_DATABASE[action] = {row["resource_arn_format"] for row in rows} or None
    return _IAM_DATABASE[action]


def check_statement(module: Module, statement: dict, where: str, key_policy: bool, findings: list):
    effect = literal(statement.get("effect", '"Allow"'))
    for forbidden in ("not_actions", "not_resources"):
        if forbidden in statement:
            findings.append(f"{where}: {forbidden} is not allowed (say what is granted, not what is not)")
    actions = [a for a in expand(module, statement.get("actions", [])) if isinstance(a, str)]
    resources = [r for r in expand(module, statement.get("resources", [])) if isinstance(r, str)]
    wildcard_actions = [a for a in actions if is_wildcard_action(a)]
    star_resource = "*" in resources
    for action in actions:
        if not is_wildcard_action(action) and iam_resource_types(action) is None:
            findings.append(f"{where}: unknown IAM action {action!r} (a typo grants nothing)")
    if effect != "Deny" and wildcard_actions:
        findings.append(f"{where}: wildcard action(s) {wildcard_actions}")
    if wildcard_actions and star_resource:
        findings.append(f"{where}: wildcard action(s) {wildcard_actions} together with resource \"*\"")
    if effect != "Deny":
        for principal in blocks(statement, "principals"):
            identifiers = [i for i in expand(module, principal.get("identifiers", [])) if isinstance(i, str)]
            if "*" in identifiers:
                findings.append(f"{where}: Allow for principal \"*\"")
    if star_resource and not key_policy and effect != "Deny":
        outside = sorted(set(actions) - ALLOWED_STAR_ACTIONS)
        if outside:
            findings.append(f"{where}: resource \"*\" with action(s) {outside} that support resource-level permissions (allowed on \"*\": {sorted(ALLOWED_STAR_ACTIONS)})")
        for action in actions:
            formats = iam_resource_types(action)
            if isinstance(formats, set) and formats != {"*"}:
                findings.append(f"{where}: {action} supports resource-level permissions ({sorted(formats - {'*'})}); it must not be granted on \"*\"")
        if ALONE_ON_STAR in actions and len(set(actions)) > 1:
            findings.append(f"{where}: {ALONE_ON_STAR} must be alone in its statement")
        sid = literal(statement.get("sid")) or ""
        if STAR_SID_MARK not in sid:
            findings.append(f"{where}: a statement on resource \"*\" must say why in its sid (…{STAR_SID_MARK}), got {sid!r}")


def check_iam(module: Module, findings: list):
    key_policies = key_policy_documents(module)
    for dtype, name, body, path in module.data:
        if dtype != "aws_iam_policy_document":
            continue
        for index, statement in enumerate(statements(body)):
            where = f"{path}: data.aws_iam_policy_document.{name} statement[{index}]"
            SEEN["IAM statements"] += 1
            check_statement(module, statement, where, name in key_policies, findings)
    policy_attributes = {
        "aws_iam_role_policy": ["policy"],
        "aws_iam_policy": ["policy"],
        "aws_iam_user_policy": ["policy"],
        "aws_iam_group_policy": ["policy"],
        "aws_iam_role": ["assume_role_policy"],
        "aws_kms_key": ["policy"],
        "aws_s3_bucket_policy": ["policy"],
        "aws_ecr_repository_policy": ["policy"],
    }
    for rtype, name, body, path in module.resources:
        for attribute in policy_attributes.get(rtype, []):
            if attribute not in body:
                continue
            ref = reference(body[attribute]) or ""
            if not re.fullmatch(r"data\.aws_iam_policy_document\.[A-Za-z0-9_-]+(\[[^\]]+\])?\.json", ref):
                findings.append(f"{path}: {rtype}.{name}.{attribute} must come from a data.aws_iam_policy_document (so it can be checked), not {body[attribute]!r}")
        if rtype == "aws_iam_role" and "inline_policy" in body:
            findings.append(f"{path}: aws_iam_role.{name} uses inline_policy; use aws_iam_role_policy with a policy document")
        if rtype in ("aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "aws_iam_role"):
            arns = expand(module, body.get("policy_arn", body.get("managed_policy_arns", [])))
            for arn in arns:
                if isinstance(arn, str) and ":policy/" in arn:
                    managed = arn.split(":policy/", 1)[1]
                    if ":iam::aws:policy/" in arn and managed not in ALLOWED_MANAGED_POLICIES:
                        findings.append(f"{path}: {rtype}.{name} attaches AWS managed policy {managed!r}, not in the allow-list {sorted(ALLOWED_MANAGED_POLICIES)}")


# --- 5. descriptions -----------------------------------------------------------------------------


def check_descriptions(module: Module, findings: list):
    for rtype, name, body, path in module.resources:
        where = f"{path}: {rtype}.{name}"
        if rtype in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule", "aws_security_group_rule"):
            if not body.get("description") or literal(body.get("description")) == "":
                findings.append(f"{where}: security group rule without a description")
        elif rtype == "aws_security_group":
            for kind in ("ingress", "egress"):
                for index, rule in enumerate(blocks(body, kind)):
                    if not rule.get("description"):
                        findings.append(f"{where} {kind}[{index}]: rule without a description")


CHECKS = [check_launch_templates, check_db_port, check_ecr_lifecycle, check_iam, check_descriptions]


def run(root: Path) -> list[str]:
    modules, findings = load_modules(root)
    for module in modules.values():
        for check in CHECKS:
            check(module, findings)
    return findings


# --- self-test ------------------------------------------------------------------------------

GOOD = """
locals {
  lifecycle = { rules = [{ rulePriority = 1, selection = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 14 }, action = { type = "expire" } }] }
}
variable "db_port" {
  type    = number
  default = 5432
}
resource "aws_launch_template" "ok" {
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}
resource "aws_vpc_security_group_ingress_rule" "db" {
  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from the nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.db_port
  to_port                      = var.db_port
  referenced_security_group_id = aws_security_group.nodes.id
}
resource "aws_vpc_security_group_ingress_rule" "https" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
resource "aws_ecr_lifecycle_policy" "ok" {
  policy = jsonencode(local.lifecycle)
}
data "aws_iam_policy_document" "ok" {
  statement {
    sid       = "EcrAuthorizationTokenNoResourceLevelPermissions"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.a.arn}/functions/*"]
  }
  statement {
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.a.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}
resource "aws_iam_role_policy" "ok" {
  policy = data.aws_iam_policy_document.ok.json
}
"""

BAD = {
    "launch template without metadata_options": ('resource "aws_launch_template" "x" {\n  name = "x"\n}', "exactly one metadata_options"),
    "launch template with optional tokens": ('resource "aws_launch_template" "x" {\n  metadata_options {\n    http_tokens = "optional"\n    http_put_response_hop_limit = 1\n  }\n}', "http_tokens"),
    "launch template with hop limit 2": ('resource "aws_launch_template" "x" {\n  metadata_options {\n    http_tokens = "required"\n    http_put_response_hop_limit = 2\n  }\n}', "hop_limit"),
    "launch template with hop limit from a variable": ('resource "aws_launch_template" "x" {\n  metadata_options {\n    http_tokens = "required"\n    http_put_response_hop_limit = var.hops\n  }\n}', "hop_limit"),
    "5432 from a CIDR": ('resource "aws_vpc_security_group_ingress_rule" "x" {\n  description = "d"\n  ip_protocol = "tcp"\n  from_port = 5432\n  to_port = 5432\n  cidr_ipv4 = "10.0.0.0/16"\n}', "cidr_ipv4"),
    "5432 from another security group": ('resource "aws_vpc_security_group_ingress_rule" "x" {\n  description = "d"\n  ip_protocol = "tcp"\n  from_port = 5432\n  to_port = 5432\n  referenced_security_group_id = aws_security_group.functions.id\n}', "not the nodes"),
    "all protocols from the VPC": ('resource "aws_vpc_security_group_ingress_rule" "x" {\n  description = "d"\n  ip_protocol = "-1"\n  cidr_ipv4 = var.vpc_cidr\n}', "cidr_ipv4"),
    "a port range around 5432 (legacy rule)": ('resource "aws_security_group_rule" "x" {\n  type = "ingress"\n  description = "d"\n  protocol = "tcp"\n  from_port = 5000\n  to_port = 6000\n  cidr_blocks = ["0.0.0.0/0"]\n}', "cidr_blocks"),
    "inline ingress on 5432 from anywhere": ('resource "aws_security_group" "x" {\n  ingress {\n    description = "d"\n    protocol = "tcp"\n    from_port = 5432\n    to_port = 5432\n    cidr_blocks = ["0.0.0.0/0"]\n  }\n}', "cidr_blocks"),
    "port from a variable defaulting to 5432": ('variable "p" {\n  default = 5432\n}\nresource "aws_vpc_security_group_ingress_rule" "x" {\n  description = "d"\n  ip_protocol = "tcp"\n  from_port = var.p\n  to_port = var.p\n  cidr_ipv4 = "0.0.0.0/0"\n}', "cidr_ipv4"),
    "unresolvable port from a CIDR": ('resource "aws_vpc_security_group_ingress_rule" "x" {\n  description = "d"\n  ip_protocol = "tcp"\n  from_port = each.value\n  to_port = each.value\n  cidr_ipv4 = "10.1.0.0/16"\n}', "cidr_ipv4"),
    "lifecycle expiring any image": ('locals {\n  p = { rules = [{ rulePriority = 1, selection = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 10 }, action = { type = "expire" } }] }\n}\nresource "aws_ecr_lifecycle_policy" "x" {\n  policy = jsonencode(local.p)\n}', "tagStatus"),
    "lifecycle expiring tagged images": ('locals {\n  p = { rules = [{ rulePriority = 1, selection = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 1 }, action = { type = "expire" } }, { rulePriority = 2, selection = { tagStatus = "tagged", tagPrefixList = ["v"], countType = "imageCountMoreThan", countNumber = 5 }, action = { type = "expire" } }] }\n}\nresource "aws_ecr_lifecycle_policy" "x" {\n  policy = jsonencode(local.p)\n}', "rule 1"),
    "lifecycle that cannot be verified": ('resource "aws_ecr_lifecycle_policy" "x" {\n  policy = jsonencode({ rules = [] })\n}', "cannot be verified"),
    "lifecycle as a JSON heredoc expiring any": ('resource "aws_ecr_lifecycle_policy" "x" {\n  policy = <<EOT\n{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3}, "action": {"type": "expire"}}]}\nEOT\n}', "tagStatus"),
    "service wildcard action": ('data "aws_iam_policy_document" "x" {\n  statement {\n    actions = ["s3:*"]\n    resources = ["arn:aws:s3:::b/*"]\n  }\n}', "wildcard action"),
    "star action on star resource": ('data "aws_iam_policy_document" "x" {\n  statement {\n    actions = ["*"]\n    resources = ["*"]\n  }\n}', "together with resource"),
    "deny with star action on star resource": ('data "aws_iam_policy_document" "x" {\n  statement {\n    effect = "Deny"\n    actions = ["iam:*"]\n    resources = ["*"]\n  }\n}', "together with resource"),
    "partial wildcard action": ('data "aws_iam_policy_document" "x" {\n  statement {\n    actions = ["s3:Get*"]\n    resources = ["arn:aws:s3:::b/*"]\n  }\n}', "wildcard action"),
    "restrictable action on star": ('data "aws_iam_policy_document" "x" {\n  statement {\n    sid = "XNoResourceLevelPermissions"\n    actions = ["s3:GetObject"]\n    resources = ["*"]\n  }\n}', "support resource-level"),
    "GetAuthorizationToken not alone": ('data "aws_iam_policy_document" "x" {\n  statement {\n    sid = "EcrNoResourceLevelPermissions"\n    actions = ["ecr:GetAuthorizationToken", "ec2:DescribeInstances"]\n    resources = ["*"]\n  }\n}', "must be alone"),
    "star resource without saying why": ('data "aws_iam_policy_document" "x" {\n  statement {\n    sid = "Ecr"\n    actions = ["ecr:GetAuthorizationToken"]\n    resources = ["*"]\n  }\n}', "sid"),
    "wildcard hidden in a local": ('locals {\n  actions = ["ecr:BatchGetImage", "iam:*"]\n}\ndata "aws_iam_policy_document" "x" {\n  statement {\n    actions = concat(local.actions, ["ecr:PutImage"])\n    resources = ["arn:aws:ecr:eu-west-1:1:repository/x"]\n  }\n}', "wildcard action"),
    "star resource hidden in a variable": ('variable "r" {\n  default = ["*"]\n}\ndata "aws_iam_policy_document" "x" {\n  statement {\n    sid = "ANoResourceLevelPermissions"\n    actions = ["secretsmanager:GetSecretValue"]\n    resources = var.r\n  }\n}', "support resource-level"),
    "wildcard in a dynamic statement": ('data "aws_iam_policy_document" "x" {\n  dynamic "statement" {\n    for_each = [1]\n    content {\n      actions = ["kms:*"]\n      resources = [var.key]\n    }\n  }\n}', "wildcard action"),
    "an action that does support resources, on star": ('data "aws_iam_policy_document" "x" {\n  statement {\n    sid = "HeartbeatNoResourceLevelPermissions"\n    actions = ["ssm:UpdateInstanceInformation"]\n    resources = ["*"]\n  }\n}', "UpdateInstanceInformation"),
    "a misspelt action": ('data "aws_iam_policy_document" "x" {\n  statement {\n    actions = ["s3:GetObjects"]\n    resources = ["arn:aws:s3:::b/*"]\n  }\n}', "unknown IAM action"),
    "not_actions": ('data "aws_iam_policy_document" "x" {\n  statement {\n    not_actions = ["iam:CreateUser"]\n    resources = ["arn:aws:iam::1:user/x"]\n  }\n}', "not_actions"),
    "allow for any principal": ('data "aws_iam_policy_document" "x" {\n  statement {\n    actions = ["s3:GetObject"]\n    resources = ["arn:aws:s3:::b/*"]\n    principals {\n      type = "*"\n      identifiers = ["*"]\n    }\n  }\n}', "principal"),
    "role policy written inline": ('resource "aws_iam_role_policy" "x" {\n  policy = jsonencode({ Statement = [{ Effect = "Allow", Action = "*", Resource = "*" }] })\n}', "must come from"),
    "administrator access attached": ('resource "aws_iam_role_policy_attachment" "x" {\n  role = "r"\n  policy_arn = "arn:aws:iam::aws:policy/AdministratorAccess"\n}', "AdministratorAccess"),
    "SSM core attached": ('resource "aws_iam_role_policy_attachment" "x" {\n  role = "r"\n  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"\n}', "AmazonSSMManagedInstanceCore"),
    "rule without a description": ('resource "aws_vpc_security_group_egress_rule" "x" {\n  ip_protocol = "tcp"\n  from_port = 443\n  to_port = 443\n  cidr_ipv4 = "0.0.0.0/0"\n}', "without a description"),
    "HCL that does not parse": ('resource "aws_s3_bucket" "x" {\n  bucket = \n}', "does not parse"),
}


def self_test() -> int:
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="slipway-invariants-") as scratch:
        root = Path(scratch)
        good = root / "good"
        good.mkdir()
        (good / "main.tf").write_text(textwrap.dedent(GOOD))
        findings = run(good)
        if findings:
            failed += 1
            print("FAIL  a compliant snippet raised findings:")
            for finding in findings:
                print(f"        {finding}")
        else:
            passed += 1
            print("ok    a compliant snippet raises nothing")
        needs_iam_database = {"an action that does support resources, on star", "a misspelt action"}
        iam_database = iam_resource_types("s3:GetObject") != "unavailable"
        for index, (name, (snippet, expected)) in enumerate(BAD.items()):
            if name in needs_iam_database and not iam_database:
                print(f"skip  {name}: policy_sentry is not importable")
                continue
            case = root / f"bad{index:02d}"
            case.mkdir()
            (case / "main.tf").write_text(snippet + "\n")
            findings = run(case)
            if any(expected in finding for finding in findings):
                passed += 1
                print(f"ok    caught: {name}")
            else:
                failed += 1
                print(f"FAIL  not caught: {name} (expected a finding containing {expected!r}, got {findings})")
    print(f"self-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--self-test"]:
        return self_test()
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    findings = run(root)
    files = sum(1 for p in root.rglob("*.tf") if ".terraform" not in p.parts)
    for what, count in SEEN.items():
        if count == 0:
            findings.append(f"found no {what} at all under {root}: the checker would pass vacuously")
    print("invariants: looked at " + ", ".join(f"{count} {what}" for what, count in SEEN.items()))
    if _IAM_DATABASE.get("available") is None:
        print("invariants: policy_sentry not importable: IAM action names and resource-level support NOT cross-checked")
    else:
        print("invariants: IAM actions cross-checked against policy_sentry's Service Authorization Reference data")
    if findings:
        print(f"invariants: {len(findings)} violation(s) in {files} files under {root}")
        for finding in findings:
            print(f"  - {finding}")
        return 1
    print(f"invariants: {files} files under {root}, 0 violations")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
