# The web tier's roles, one pair per service. The execution role is what ECS uses to start a
# task (pull the image, read the task's secrets, write its logs); the task role is what the
# running app or worker may do (the objects under the data bucket's app/ prefix, nothing else).

locals {
  # pull this stack's image (the SageMaker role uses the same statements)
  ecr_pull = [
    {
      Effect   = "Allow"
      Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      Resource = aws_ecr_repository.app.arn
    },
    {
      Effect   = "Allow"
      Action   = "ecr:GetAuthorizationToken"
      Resource = "*"
    }
  ]
  # the trust policy of a role that an AWS service assumes
  assumed_by = { for service in ["vpc-flow-logs.amazonaws.com", "monitoring.rds.amazonaws.com"] : service => jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = service }
      Action    = "sts:AssumeRole"
    }]
  }) }
  ecs_assume = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { ArnLike = { "aws:SourceArn" = "arn:aws:ecs:${var.region}:${data.aws_caller_identity.current.account_id}:*" } }
    }]
  })
}

# app-exec, app-task, worker-exec, worker-task
resource "aws_iam_role" "ecs" {
  for_each           = toset([for pair in setproduct(keys(local.service_secrets), ["exec", "task"]) : join("-", pair)])
  name_prefix        = "${var.name}-${each.key}-"
  assume_role_policy = local.ecs_assume
}

resource "aws_iam_role_policy" "execution" {
  for_each = local.service_secrets
  name     = "start-task"
  role     = aws_iam_role.ecs["${each.key}-exec"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(local.ecr_pull, [
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.web.arn}:*"
      },
      {
        Effect   = "Allow"
        Action   = "secretsmanager:GetSecretValue"
        Resource = [for n in distinct(concat(each.value, local.migrate_secrets)) : aws_secretsmanager_secret.web[n].arn]
      },
      {
        Effect   = "Allow"
        Action   = "kms:Decrypt"
        Resource = aws_kms_key.main.arn
      }
    ])
  })
}

# The store puts each object with SSE (AES256); the bucket's default is the stack's KMS key, so
# the key is allowed too for objects written under that default.
resource "aws_iam_role_policy" "task" {
  for_each = local.service_secrets
  name     = "object-store"
  role     = aws_iam_role.ecs["${each.key}-task"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
        Resource = local.store_keys
      },
      {
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = aws_s3_bucket.data.arn
        Condition = { StringLike = { "s3:prefix" = ["app/*"] } }
      },
      {
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = aws_kms_key.main.arn
      }
    ]
  })
}
