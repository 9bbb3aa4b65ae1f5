# One role per duty, least privilege:
#
#   manager-node  instance profile of the swarm managers: Session Manager, the swarm join
#                 parameters (read/write), the services' log group, pulling Slipway's image,
#                 and assuming the api and scheduler roles for the services it hosts.
#   worker-node   instance profile of the swarm workers: the same, but it may only READ the
#                 worker join token (never the manager token) and assume the worker role.
#   api           slipway-api: archives (write/read/delete), DescribeImages for /verify, its secrets.
#   worker        slipway-worker: archives, push/pull/delete function images, its secrets.
#   scheduler     slipway-scheduler: its secret (the database) and nothing else.
#
# The services get their role by AssumeRole from the node's credentials (an AWS config
# profile with role_arn and credential_source = Ec2InstanceMetadata; see the README). Since
# every launch template sets http_put_response_hop_limit = 1, only processes in the node's
# own network namespace reach the metadata service: Slipway's services run with host
# networking, function containers run on their bridges and cannot (and the host firewall
# drops 169.254.0.0/16 from those bridges as well).
#
# No statement has a wildcard action. "*" is used as a resource only for actions that have
# no resource-level permissions, each in a statement of its own that says so.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  parameter_arn_prefix = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter"
  manager_token_arn    = "${local.parameter_arn_prefix}${var.manager_token_parameter_name}"
  worker_token_arn     = "${local.parameter_arn_prefix}${var.worker_token_parameter_name}"
  # The first manager claims the bootstrap by creating this parameter (it does not exist
  # before); its name carries a per-cluster suffix, hence the pattern.
  bootstrap_arn_pattern = "${local.parameter_arn_prefix}${var.bootstrap_parameter_prefix}*"

  archive_objects = "${var.archive_bucket_arn}/${var.archive_prefix}*"

  ecr_push_actions = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
  ]
  ecr_pull_actions = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
  ]

  node_roles = {
    manager = {
      description    = "Swarm manager nodes of ${var.name}"
      read_tokens    = [local.manager_token_arn, local.worker_token_arn]
      write_tokens   = [local.manager_token_arn, local.worker_token_arn]
      assumable_duty = concat(["scheduler"], var.api_node_group == "manager" ? ["api"] : [])
    }
    worker = {
      description    = "Swarm worker nodes of ${var.name} (where functions run)"
      read_tokens    = [local.worker_token_arn]
      write_tokens   = []
      assumable_duty = concat(["worker"], var.api_node_group == "worker" ? ["api"] : [])
    }
  }
}

# --- node roles (EC2 instance profiles) ---------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "Ec2InstancesOnly"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  for_each = local.node_roles

  name               = "${var.name}-${each.key}-node"
  description        = each.value.description
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "node" {
  for_each = local.node_roles

  name = "${var.name}-${each.key}-node"
  role = aws_iam_role.node[each.key].name
}

data "aws_iam_policy_document" "node" {
  for_each = local.node_roles

  # Deliberately not the managed AmazonSSMManagedInstanceCore: that policy also grants
  # ssm:GetParameter(s) on every parameter of the account, while a node may read only the
  # swarm join parameters. What Session Manager and Run Command need is listed instead.
  statement {
    sid    = "SessionManagerAndRunCommandNoResourceLevelPermissions"
    effect = "Allow"
    # The ssmmessages (Session Manager channels) and ec2messages (Run Command) actions have
    # no resource types in the Service Authorization Reference: "*" is the only form.
    actions = [
      "ec2messages:AcknowledgeMessage",
      "ec2messages:DeleteMessage",
      "ec2messages:FailMessage",
      "ec2messages:GetEndpoint",
      "ec2messages:GetMessages",
      "ec2messages:SendReply",
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }

  statement {
    # The SSM agent's heartbeat; it does support instance ARNs (unlike the actions above).
    sid       = "SsmAgentHeartbeat"
    effect    = "Allow"
    actions   = ["ssm:UpdateInstanceInformation"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:instance/*"]
  }

  statement {
    sid    = "DiscoverManagersNoResourceLevelPermissions"
    effect = "Allow"
    # ec2:DescribeInstances supports no resource-level permissions. The join script uses it
    # to find the running managers (by their slipway:cluster and slipway:swarm-role tags),
    # the managers' reaper to see which swarm nodes' instances are gone.
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadSwarmJoinParameters"
    effect    = "Allow"
    actions   = ["ssm:GetParameter"]
    resources = concat(each.value.read_tokens, [local.bootstrap_arn_pattern])
  }

  statement {
    sid       = "DecryptSwarmJoinTokens"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = each.value.read_tokens
    }
  }

  dynamic "statement" {
    for_each = length(each.value.write_tokens) > 0 ? [1] : []

    content {
      sid       = "WriteSwarmJoinParameters"
      effect    = "Allow"
      actions   = ["ssm:PutParameter"]
      resources = concat(each.value.write_tokens, [local.bootstrap_arn_pattern])
    }
  }

  dynamic "statement" {
    for_each = length(each.value.write_tokens) > 0 ? [1] : []

    content {
      sid       = "EncryptSwarmJoinTokens"
      effect    = "Allow"
      actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["ssm.${local.region}.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = each.value.write_tokens
      }
    }
  }

  statement {
    sid       = "ServiceLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.services_log_group_arn}:*"]
  }

  statement {
    sid    = "EcrAuthorizationTokenNoResourceLevelPermissions"
    effect = "Allow"
    # ecr:GetAuthorizationToken has no resource-level permissions; what the token may do is
    # decided by the statements below. Alone in its statement on purpose.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "PullSlipwaysOwnImage"
    effect    = "Allow"
    actions   = local.ecr_pull_actions
    resources = [var.platform_repository_arn]
  }

  statement {
    sid       = "AssumeTheDutyRolesOfTheServicesOnThisNode"
    effect    = "Allow"
    actions   = ["sts:AssumeRole"]
    resources = [for duty in each.value.assumable_duty : "arn:${local.partition}:iam::${local.account_id}:role/${var.name}-${duty}"]
  }
}

resource "aws_iam_role_policy" "node" {
  for_each = local.node_roles

  name   = "${var.name}-${each.key}-node"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.node[each.key].json
}

# --- duty roles, assumed by the node role of the nodes their service runs on ---------------

locals {
  duties = {
    api       = var.api_node_group
    worker    = "worker"
    scheduler = "manager"
  }
}

data "aws_iam_policy_document" "duty_assume" {
  for_each = local.duties

  statement {
    sid     = "FromTheNodesThisServiceRunsOn"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.node[each.value].arn]
    }
  }
}

resource "aws_iam_role" "duty" {
  for_each = local.duties

  name                 = "${var.name}-${each.key}"
  description          = "slipway-${each.key} of ${var.name}"
  assume_role_policy   = data.aws_iam_policy_document.duty_assume[each.key].json
  max_session_duration = 3600
}

# Reading secrets: GetSecretValue on the named secrets, and decrypting them only through
# Secrets Manager and only for those secrets.
data "aws_iam_policy_document" "api" {
  statement {
    sid = "WriteReadDeleteArchives"
    # PutObject: an accepted upload; DeleteObject: the archive of a deploy whose transaction
    # failed; GetObject: reading back what it stored.
    effect    = "Allow"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = [local.archive_objects]
  }

  statement {
    sid       = "ArchiveEncryption"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = [var.archive_bucket_arn]
    }
  }

  statement {
    # POST /api/functions/{id}/verify asks ECR whether the recorded tag and digest still
    # exist (shared/src/registry/ecr.rs: DescribeImages); the api never pushes or deletes.
    sid       = "VerifyFunctionImages"
    effect    = "Allow"
    actions   = ["ecr:DescribeImages"]
    resources = var.function_repository_arns
  }

  statement {
    sid       = "ReadItsSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    resources = var.api_secret_arns
  }

  statement {
    sid       = "DecryptItsSecrets"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:SecretARN"
      values   = var.api_secret_arns
    }
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid    = "ReadWriteDeleteArchives"
    effect = "Allow"
    # GetObject: the build reads the archive. PutObject: the source job stores the archive it
    # packed from a pushed git commit. DeleteObject: retention pruning, purges, and the
    # archive of a superseded git deployment (worker/src/jobs/{build,source,purge}.rs).
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = [local.archive_objects]
  }

  statement {
    sid       = "ListArchivesOfAFunctionBeingPurged"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.archive_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.archive_prefix}*"]
    }
  }

  statement {
    sid       = "ArchiveEncryption"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:aws:s3:arn"
      values   = [var.archive_bucket_arn]
    }
  }

  statement {
    sid    = "EcrAuthorizationTokenNoResourceLevelPermissions"
    effect = "Allow"
    # ecr:GetAuthorizationToken has no resource-level permissions; the engine pushes and
    # pulls with this token, limited to what the next statement allows. Alone on purpose.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid    = "PushPullPruneFunctionImages"
    effect = "Allow"
    # Push (the engine, with the token above), pull (cache-warm, and builds FROM the owner's
    # own functions), CreateRepository (each function's repository, below the functions
    # repository's name, before its first push), DescribeImages (tag and digest after a push,
    # verification) and BatchDeleteImage (Slipway prunes the manifests of versions it no longer
    # retains).
    actions = distinct(concat(local.ecr_push_actions, local.ecr_pull_actions, [
      "ecr:BatchDeleteImage",
      "ecr:CreateRepository",
      "ecr:DescribeImages",
    ]))
    resources = var.function_repository_arns
  }

  statement {
    sid       = "ReadItsSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    resources = var.worker_secret_arns
  }

  statement {
    sid       = "DecryptItsSecrets"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:SecretARN"
      values   = var.worker_secret_arns
    }
  }
}

data "aws_iam_policy_document" "scheduler" {
  # The scheduler only talks to PostgreSQL: no ECR, no S3.
  statement {
    sid       = "ReadItsSecrets"
    effect    = "Allow"
    actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    resources = var.scheduler_secret_arns
  }

  statement {
    sid       = "DecryptItsSecrets"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:SecretARN"
      values   = var.scheduler_secret_arns
    }
  }
}

resource "aws_iam_role_policy" "api" {
  name   = "${var.name}-api"
  role   = aws_iam_role.duty["api"].id
  policy = data.aws_iam_policy_document.api.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "${var.name}-worker"
  role   = aws_iam_role.duty["worker"].id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "${var.name}-scheduler"
  role   = aws_iam_role.duty["scheduler"].id
  policy = data.aws_iam_policy_document.scheduler.json
}
