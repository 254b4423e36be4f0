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
