# The SageMaker endpoint (serverless: it costs nothing while idle) and its role.

resource "aws_iam_role" "sagemaker" {
  name_prefix = "${var.name}-sagemaker-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "sagemaker.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

# Least privilege: pull this repository's image, read the artifacts bucket, write its logs.
resource "aws_iam_role_policy" "sagemaker" {
  name = "serve"
  role = aws_iam_role.sagemaker.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(local.ecr_pull, [
      {
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:ListBucket"]
        Resource = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
      },
      {
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = aws_kms_key.main.arn
      },
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/Endpoints/${var.name}*"
      }
    ])
  })
}

resource "aws_sagemaker_model" "classifier" {
  name               = "${var.name}-classifier"
  execution_role_arn = aws_iam_role.sagemaker.arn
  primary_container {
    image = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"
    environment = {
      MRIMASTER_MODE = "sagemaker"
    }
  }
  #checkov:skip=CKV_AWS_370:serverless endpoints run outside a customer VPC (no VpcConfig support)
}

resource "aws_sagemaker_endpoint_configuration" "serverless" {
  name = "${var.name}-serverless"
  production_variants {
    variant_name = "main"
    model_name   = aws_sagemaker_model.classifier.name
    serverless_config {
      memory_size_in_mb = var.serverless_memory_mb
      max_concurrency   = var.serverless_max_concurrency
    }
  }
  #checkov:skip=CKV_AWS_98:serverless variants cannot take a KMS key for storage (no instance volume)
}

resource "aws_sagemaker_endpoint" "classifier" {
  name                 = var.name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.serverless.name
}
