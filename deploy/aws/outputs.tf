output "data_bucket" {
  value = aws_s3_bucket.data.id
}

output "artifacts_bucket" {
  value = aws_s3_bucket.artifacts.id
}

output "ecr_repository_url" {
  value = aws_ecr_repository.app.repository_url
}

output "endpoint_name" {
  value = aws_sagemaker_endpoint.classifier.name
}

output "predict_url" {
  value = "${aws_api_gateway_stage.v1.invoke_url}/predict"
}

output "api_key" {
  value     = aws_api_gateway_api_key.client.value
  sensitive = true
}

output "web_url" {
  value = "${local.https ? "https" : "http"}://${aws_lb.web.dns_name}"
}

output "ecs_cluster" {
  value = aws_ecs_cluster.web.name
}

output "db_address" {
  value = aws_db_instance.main.address
}

output "admin_password_secret" {
  description = "Read the first admin's password with `aws secretsmanager get-secret-value --secret-id`."
  value       = aws_secretsmanager_secret.web["admin-password"].arn
}

output "public_subnet_cidrs" {
  value = [for s in aws_subnet.public : s.cidr_block]
}

output "private_subnet_ids" {
  value = [for s in aws_subnet.private : s.id]
}
