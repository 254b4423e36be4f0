variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "mrimaster"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "image_tag" {
  description = "Tag of the image in the ECR repository that the endpoint serves (push it first: see README)."
  type        = string
  default     = "latest"
}

variable "serverless_memory_mb" {
  description = "Memory of the serverless endpoint (1024-6144 MB, in steps of 1024); the classifier needs about 2 GB."
  type        = number
  default     = 3072
}

variable "serverless_max_concurrency" {
  description = "Most concurrent invocations of the serverless endpoint."
  type        = number
  default     = 4
}

variable "monthly_budget_usd" {
  description = "Monthly cost above which the budget alarm e-mails budget_email."
  type        = number
  default     = 20
}

variable "budget_email" {
  description = "Who gets the budget alarm."
  type        = string
}

variable "log_retention_days" {
  description = "How long API and endpoint logs are kept."
  type        = number
  default     = 365
}

variable "create_budget" {
  description = "Create the monthly budget alarm (off only for the local moto test, which cannot emulate AWS Budgets' notifications)."
  type        = bool
  default     = true
}

# --- the web tier (network.tf, database.tf, secrets.tf, web.tf) ---

variable "vpc_cidr" {
  description = "Address range of the web tier's VPC (a /16: two public and two private /24 subnets)."
  type        = string
  default     = "10.20.0.0/16"
}

variable "availability_zones" {
  description = "Two (or more) zones of the region for the subnets; empty: <region>a and <region>b."
  type        = list(string)
  default     = []
}

variable "certificate_arn" {
  description = "ACM certificate of the app's domain, in this region: HTTPS on 443, port 80 redirects, secure cookies. Empty: plain HTTP on 80 (a trial only)."
  type        = string
  default     = ""
}

variable "allowed_cidrs" {
  description = "Networks that may reach the load balancer (a hospital's ranges; default anyone)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_count" {
  description = "Tasks of `mrimaster serve --no-worker` behind the load balancer."
  type        = number
  default     = 2
}

variable "worker_count" {
  description = "Tasks of `mrimaster worker` (segmentation jobs)."
  type        = number
  default     = 2
}

variable "app_cpu" {
  description = "CPU units of an app task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "app_memory" {
  description = "Memory of an app task, MiB (the classifier with Grad-CAM needs about 2 GB)."
  type        = number
  default     = 4096
}

variable "worker_cpu" {
  description = "CPU units of a worker task (a segmentation uses every core it gets)."
  type        = number
  default     = 2048
}

variable "worker_memory" {
  description = "Memory of a worker task, MiB (a 3D segmentation needs about 6 GB)."
  type        = number
  default     = 8192
}

variable "db_instance_class" {
  description = "RDS instance class of the PostgreSQL database."
  type        = string
  default     = "db.t4g.small"
}

variable "db_multi_az" {
  description = "A standby database in a second zone (doubles its cost; no single point of failure)."
  type        = bool
  default     = true
}

variable "db_password_version" {
  description = "Bump to generate a new database password (written to RDS and to the URL secret in one apply)."
  type        = number
  default     = 1
}

variable "deletion_protection" {
  description = "Protect the database and the load balancer from `terraform destroy` (off only for a throw-away stack and the moto test)."
  type        = bool
  default     = true
}

variable "secret_recovery_days" {
  description = "Days a deleted secret can still be restored (0: deleted at once, for the moto test)."
  type        = number
  default     = 30
}
