# The web app on ECS Fargate: `mrimaster serve --no-worker` tasks behind an Application Load
# Balancer and `mrimaster worker` tasks, in the private subnets, sharing the RDS database and the
# data bucket (prefix app/). Every task first runs `mrimaster db upgrade` (under the database's
# lock: safe when several start at once) in a short-lived container that the main one waits for.

locals {
  https      = var.certificate_arn != ""
  image      = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"
  store_url  = "s3://${aws_s3_bucket.data.id}/app"
  store_keys = "${aws_s3_bucket.data.arn}/app/*"
  environment = [for k, v in {
    MRIMASTER_STORE_URL    = local.store_url
    MRIMASTER_AUTO_MIGRATE = "0" # the migrate container did it
    # the load balancer's nodes have addresses in the public subnets, and only they reach the app
    MRIMASTER_TRUSTED_PROXIES = join(",", [for s in aws_subnet.public : s.cidr_block])
    MRIMASTER_COOKIE_SECURE   = local.https ? "1" : "0"
    AWS_DEFAULT_REGION        = var.region
  } : { name = k, value = v }]
  # service => the secrets (secrets.tf) its main container gets (a worker files nothing to a
  # PACS); the migrate container gets migrate_secrets (it creates the first admin)
  service_secrets = {
    app    = ["database-url", "server-key", "link-key"]
    worker = ["database-url", "server-key"]
  }
  migrate_secrets = ["database-url", "server-key", "admin-password"]
  secret_refs = { for container, names in merge(local.service_secrets, { migrate = local.migrate_secrets }) : container => [
    for n in names : { name = local.secrets[n], valueFrom = aws_secretsmanager_secret.web[n].arn }
  ] }
  logging = { for svc in keys(local.service_secrets) : svc => {
    logDriver = "awslogs"
    options = {
      awslogs-group         = aws_cloudwatch_log_group.web.name
      awslogs-region        = var.region
      awslogs-stream-prefix = svc
    }
  } }
  migrate = { for svc in keys(local.service_secrets) : svc => {
    name             = "migrate"
    image            = local.image
    command          = ["db", "upgrade"]
    essential        = false
    environment      = local.environment
    secrets          = local.secret_refs.migrate
    logConfiguration = local.logging[svc]
  } }
  containers = {
    app = {
      name         = "app"
      image        = local.image
      command      = ["serve", "--no-worker"]
      essential    = true
      portMappings = [{ containerPort = 8000, protocol = "tcp" }]
      environment  = local.environment
      secrets      = local.secret_refs.app
      dependsOn    = [{ containerName = "migrate", condition = "SUCCESS" }]
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 120
      }
      logConfiguration = local.logging.app
    }
    worker = {
      name             = "worker"
      image            = local.image
      command          = ["worker"]
      essential        = true
      environment      = local.environment
      secrets          = local.secret_refs.worker
      dependsOn        = [{ containerName = "migrate", condition = "SUCCESS" }]
      logConfiguration = local.logging.worker
    }
  }
  sizes = {
    app    = { cpu = var.app_cpu, memory = var.app_memory, count = var.app_count }
    worker = { cpu = var.worker_cpu, memory = var.worker_memory, count = var.worker_count }
  }
}

resource "aws_cloudwatch_log_group" "web" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- security groups: internet -> ALB -> app:8000; app and worker -> db:5432 and HTTPS out ---

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "the load balancer: HTTP(S) in, the app out"
  vpc_id      = aws_vpc.main.id
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "task" {
  for_each    = local.sizes
  name_prefix = "${var.name}-${each.key}-"
  description = "${each.key} tasks"
  vpc_id      = aws_vpc.main.id
  #checkov:skip=CKV2_AWS_5:attached to the app or worker service (aws_ecs_service.web, for_each), which the graph check does not follow
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL, from the app and worker tasks only"
  vpc_id      = aws_vpc.main.id
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  for_each          = { for pair in setproduct(local.https ? [80, 443] : [80], var.allowed_cidrs) : "${pair[0]}-${pair[1]}" => pair }
  security_group_id = aws_security_group.alb.id
  description       = "HTTP(S) from the allowed networks"
  ip_protocol       = "tcp"
  from_port         = each.value[0]
  to_port           = each.value[0]
  cidr_ipv4         = each.value[1]
  #checkov:skip=CKV_AWS_260:the public entry point of the web app; port 80 only redirects to HTTPS once certificate_arn is set
}

# The rules between the groups: name => [direction, group, port, peer group or null,
# peer CIDR or null, why].
locals {
  rules = {
    alb-app      = ["egress", aws_security_group.alb.id, 8000, aws_security_group.task["app"].id, null, "to the app tasks"]
    app-alb      = ["ingress", aws_security_group.task["app"].id, 8000, aws_security_group.alb.id, null, "from the load balancer"]
    app-db       = ["egress", aws_security_group.task["app"].id, 5432, aws_security_group.db.id, null, "to PostgreSQL"]
    worker-db    = ["egress", aws_security_group.task["worker"].id, 5432, aws_security_group.db.id, null, "to PostgreSQL"]
    db-app       = ["ingress", aws_security_group.db.id, 5432, aws_security_group.task["app"].id, null, "PostgreSQL from the app tasks"]
    db-worker    = ["ingress", aws_security_group.db.id, 5432, aws_security_group.task["worker"].id, null, "PostgreSQL from the worker tasks"]
    app-https    = ["egress", aws_security_group.task["app"].id, 443, null, ["0.0.0.0/0"], "HTTPS: ECR, S3, Secrets Manager, CloudWatch, a PACS"]
    worker-https = ["egress", aws_security_group.task["worker"].id, 443, null, ["0.0.0.0/0"], "HTTPS: ECR, S3, Secrets Manager, CloudWatch"]
  }
}

resource "aws_security_group_rule" "web" {
  for_each                 = local.rules
  type                     = each.value[0]
  security_group_id        = each.value[1]
  protocol                 = "tcp"
  from_port                = each.value[2]
  to_port                  = each.value[2]
  source_security_group_id = each.value[3]
  cidr_blocks              = each.value[4]
  description              = each.value[5]
}

# --- load balancer ---

resource "aws_lb" "web" {
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = [for s in aws_subnet.public : s.id]
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  #checkov:skip=CKV_AWS_91:access logs need a bucket with SSE-S3 (not KMS) and the region's ELB account in its policy; the app logs every request to CloudWatch
  #checkov:skip=CKV2_AWS_28:a WAF costs more than this department app; the app limits log-ins itself
  #checkov:skip=CKV2_AWS_76:no WAF (see CKV2_AWS_28)
  #checkov:skip=CKV2_AWS_20:port 80 redirects to HTTPS (http_redirect) once certificate_arn is set; without one there is no HTTPS to redirect to
}

resource "aws_lb_target_group" "app" {
  name_prefix          = "mrim-"
  port                 = 8000
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = 30
  health_check {
    path                = "/healthz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
  lifecycle {
    create_before_destroy = true
  }
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the targets are in private subnets that only it reaches
}

resource "aws_lb_listener" "https" {
  count             = local.https ? 1 : 0
  load_balancer_arn = aws_lb.web.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  count             = local.https ? 1 : 0
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_lb_listener" "http" {
  count             = local.https ? 0 : 1
  load_balancer_arn = aws_lb.web.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
  #checkov:skip=CKV_AWS_2:exists only while certificate_arn is empty (a trial without a domain); with a certificate port 80 redirects to HTTPS (http_redirect)
  #checkov:skip=CKV_AWS_103:plain HTTP has no TLS policy (see CKV_AWS_2)
}

# --- ECS ---

resource "aws_ecs_cluster" "web" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "web" {
  for_each                 = local.sizes
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.ecs["${each.key}-exec"].arn
  task_role_arn            = aws_iam_role.ecs["${each.key}-task"].arn
  container_definitions    = jsonencode([local.migrate[each.key], local.containers[each.key]])
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  #checkov:skip=CKV_AWS_336:the image writes as user 10001 under /data (its volume) and its home; Fargate's bind mounts are root-owned, so a read-only root file system needs testing on a real cluster first
}

resource "aws_ecs_service" "web" {
  for_each                           = local.sizes
  name                               = each.key
  cluster                            = aws_ecs_cluster.web.id
  task_definition                    = aws_ecs_task_definition.web[each.key].arn
  desired_count                      = each.value.count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 50
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = each.key == "app" ? 180 : null
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  network_configuration {
    subnets          = [for s in aws_subnet.private : s.id]
    security_groups  = [aws_security_group.task[each.key].id]
    assign_public_ip = false
  }
  dynamic "load_balancer" {
    for_each = each.key == "app" ? [8000] : []
    content {
      target_group_arn = aws_lb_target_group.app.arn
      container_name   = "app"
      container_port   = load_balancer.value
    }
  }
  depends_on = [aws_lb_listener.http, aws_lb_listener.https, aws_iam_role_policy.execution]
}
