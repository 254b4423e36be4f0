# The web app's PostgreSQL: RDS in the private subnets, encrypted with the stack's key, reachable
# only from the app and worker containers, TLS enforced.

resource "aws_db_subnet_group" "main" {
  name_prefix = "${var.name}-"
  subnet_ids  = [for s in aws_subnet.private : s.id]
}

resource "aws_db_parameter_group" "main" {
  name_prefix = "${var.name}-pg15-"
  family      = "postgres15"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000" # ms: slow queries
  }
  lifecycle {
    create_before_destroy = true
  }
}

# RDS writes these groups itself when they are missing, unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "db" {
  for_each          = toset(["postgresql", "upgrade"])
  name              = "/aws/rds/instance/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "rds_monitoring" {
  name_prefix        = "${var.name}-rds-mon-"
  assume_role_policy = local.assumed_by["monitoring.rds.amazonaws.com"]
}

# What the AWS-managed AmazonRDSEnhancedMonitoringRole allows, written out: the OS metrics go to
# the account's RDSOSMetrics log group.
resource "aws_iam_role_policy" "rds_monitoring" {
  name = "enhanced-monitoring"
  role = aws_iam_role.rds_monitoring.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:PutRetentionPolicy"]
        Resource = "arn:aws:logs:*:${data.aws_caller_identity.current.account_id}:log-group:RDS*"
      },
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "logs:GetLogEvents"]
        Resource = "arn:aws:logs:*:${data.aws_caller_identity.current.account_id}:log-group:RDS*:log-stream:*"
      }
    ]
  })
}

resource "aws_db_instance" "main" {
  identifier                            = var.name
  engine                                = "postgres"
  engine_version                        = "15"
  instance_class                        = var.db_instance_class
  allocated_storage                     = 20
  max_allocated_storage                 = 100
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.main.arn
  db_name                               = "mrimaster"
  username                              = "mrimaster"
  password_wo                           = ephemeral.aws_secretsmanager_random_password.db.random_password
  password_wo_version                   = var.db_password_version
  db_subnet_group_name                  = aws_db_subnet_group.main.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  parameter_group_name                  = aws_db_parameter_group.main.name
  publicly_accessible                   = false
  multi_az                              = var.db_multi_az
  backup_retention_period               = 7
  copy_tags_to_snapshot                 = true
  deletion_protection                   = var.deletion_protection
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${var.name}-final"
  auto_minor_version_upgrade            = true
  iam_database_authentication_enabled   = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.main.arn
  performance_insights_retention_period = 7
  apply_immediately                     = false
  depends_on                            = [aws_cloudwatch_log_group.db, aws_iam_role_policy.rds_monitoring]
}
