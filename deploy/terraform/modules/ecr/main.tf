# Two repositories:
#   <name>/slipway    Slipway's own image (api, worker, scheduler, cli), pushed by a person or CI.
#   <name>/functions  where the worker pushes function images.
#
# Repository names: with SLIPWAY_REGISTRY=<registry>/<name>/functions, Slipway names each
# function's repository `<name>/functions/<function-name>-<first 8 hex of its id>` and creates
# it (CreateRepository, scan on push) before its first push (shared/src/registry/ecr.rs); the
# worker's policy (modules/iam) grants that on `<name>/functions` and everything under it.
# Those repositories get no lifecycle policy from here: nothing in them expires but what
# Slipway prunes itself.

locals {
  # ECR lifecycle policy for both repositories. It ONLY ever expires UNTAGGED images.
  #
  # Why that can never expire a digest Slipway still pins: Slipway records, for every built
  # version, the tag v<N> and the manifest digest, and the runtime only ever starts
  # repo@digest. Every version it still pins — the active one, the ones in flight, and the
  # SLIPWAY_RETAINED_VERSIONS newest that a rollback may reach — keeps its v<N> tag, so its
  # digest is tagged and no rule below selects it. Versions that leave the retention window
  # are pruned by Slipway itself through the registry API (BatchDeleteImage), and only when
  # no retained version pins the same digest. A rule on "tagged" or "any" images (by count or
  # age) would not know which tags Slipway still pins and could expire the image of a version
  # that is serving or a rollback target; so there is no such rule, and
  # tests/invariants.py fails the build if one appears.
  #
  # What is left for this rule: layers and manifests that lost their tag outside Slipway's
  # bookkeeping (an interrupted push, a v<N> tag moved by hand). The last case is the one to
  # watch: if someone re-tags v<N> behind Slipway's back, the pinned digest becomes untagged;
  # Slipway's digest sweep reports image_drift, and after var.untagged_expiry_days this rule
  # deletes it (the function then turns Failed with image_not_found). The functions
  # repository's policy therefore refuses PutImage from anyone but the worker role, and the
  # expiry should stay well above SLIPWAY_VERIFY_EVERY so an operator sees the drift first.
  untagged_only_lifecycle_policy = {
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images only; every image Slipway pins keeps its v<N> tag"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_expiry_days
        }
        action = {
          type = "expire"
        }
      },
    ]
  }
}

resource "aws_ecr_repository" "platform" {
  name = "${var.name}/slipway"
  # Release tags of Slipway itself are never rewritten.
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_repository" "functions" {
  # checkov:skip=CKV_AWS_51:Tags must stay MUTABLE: Slipway verifies tag and digest itself (POST /api/functions/{id}/verify and the digest sweep report image_drift / image_tag_overwritten, with on_tag_overwrite keep|fail), which IMMUTABLE would make impossible to exercise; it never runs a tag, only the recorded digest.
  name = "${var.name}/functions"
  # MUTABLE on purpose. Slipway pins every deployment to the manifest digest it recorded and
  # starts only repo@digest, so a moved tag cannot change what runs. Detecting a moved tag is
  # one of its features (image_drift, image_tag_overwritten, on_tag_overwrite = keep | fail);
  # with IMMUTABLE tags that path could never happen, and a retried push job of the same
  # version (same tag) would depend on ECR accepting an identical re-push instead of simply
  # overwriting the tag with the same digest.
  image_tag_mutability = "MUTABLE"
  force_delete         = var.force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "platform" {
  repository = aws_ecr_repository.platform.name
  policy     = jsonencode(local.untagged_only_lifecycle_policy)
}

resource "aws_ecr_lifecycle_policy" "functions" {
  repository = aws_ecr_repository.functions.name
  policy     = jsonencode(local.untagged_only_lifecycle_policy)
}

# Only Slipway's worker may push (and so move tags) in the functions repository. Without this
# an administrator's `docker push …:v3` would silently untag the digest Slipway pins for v3.
data "aws_iam_policy_document" "functions" {
  count = length(var.image_writer_role_arns) > 0 ? 1 : 0

  statement {
    sid    = "OnlySlipwaysWorkerPushes"
    effect = "Deny"
    actions = [
      "ecr:CompleteLayerUpload",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = var.image_writer_role_arns
    }
  }
}

resource "aws_ecr_repository_policy" "functions" {
  count = length(var.image_writer_role_arns) > 0 ? 1 : 0

  repository = aws_ecr_repository.functions.name
  policy     = data.aws_iam_policy_document.functions[0].json
}
