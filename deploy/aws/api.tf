# API Gateway in front of the endpoint: POST /predict with an API key, throttled, logged.

resource "aws_iam_role" "apigateway" {
  name_prefix = "${var.name}-apigw-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "apigateway.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy" "apigateway" {
  name = "invoke"
  role = aws_iam_role.apigateway.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "sagemaker:InvokeEndpoint"
      Resource = aws_sagemaker_endpoint.classifier.arn
    }]
  })
}

resource "aws_api_gateway_rest_api" "api" {
  name               = var.name
  binary_media_types = ["image/png", "image/jpeg", "application/dicom"]
  endpoint_configuration {
    types = ["REGIONAL"]
  }
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_api_gateway_resource" "predict" {
  rest_api_id = aws_api_gateway_rest_api.api.id
  parent_id   = aws_api_gateway_rest_api.api.root_resource_id
  path_part   = "predict"
}

resource "aws_api_gateway_method" "predict" {
  rest_api_id      = aws_api_gateway_rest_api.api.id
  resource_id      = aws_api_gateway_resource.predict.id
  http_method      = "POST"
  authorization    = "NONE"
  api_key_required = true
  #checkov:skip=CKV2_AWS_53:the body is validated by the container (it answers 4xx with the reason)
}

resource "aws_api_gateway_integration" "predict" {
  rest_api_id             = aws_api_gateway_rest_api.api.id
  resource_id             = aws_api_gateway_resource.predict.id
  http_method             = aws_api_gateway_method.predict.http_method
  type                    = "AWS"
  integration_http_method = "POST"
  uri                     = "arn:aws:apigateway:${var.region}:runtime.sagemaker:path/endpoints/${aws_sagemaker_endpoint.classifier.name}/invocations"
  credentials             = aws_iam_role.apigateway.arn
  passthrough_behavior    = "WHEN_NO_TEMPLATES"
  content_handling        = "CONVERT_TO_BINARY"
}

resource "aws_api_gateway_method_response" "ok" {
  rest_api_id = aws_api_gateway_rest_api.api.id
  resource_id = aws_api_gateway_resource.predict.id
  http_method = aws_api_gateway_method.predict.http_method
  status_code = "200"
}

resource "aws_api_gateway_integration_response" "ok" {
  rest_api_id = aws_api_gateway_rest_api.api.id
  resource_id = aws_api_gateway_resource.predict.id
  http_method = aws_api_gateway_method.predict.http_method
  status_code = aws_api_gateway_method_response.ok.status_code
  depends_on  = [aws_api_gateway_integration.predict]
}

resource "aws_api_gateway_deployment" "api" {
  rest_api_id = aws_api_gateway_rest_api.api.id
  triggers = {
    redeploy = sha1(jsonencode([aws_api_gateway_resource.predict, aws_api_gateway_method.predict, aws_api_gateway_integration.predict]))
  }
  lifecycle {
    create_before_destroy = true
  }
  depends_on = [aws_api_gateway_integration_response.ok]
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_api_gateway_stage" "v1" {
  rest_api_id          = aws_api_gateway_rest_api.api.id
  deployment_id        = aws_api_gateway_deployment.api.id
  stage_name           = "v1"
  xray_tracing_enabled = true
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format          = jsonencode({ requestId = "$context.requestId", ip = "$context.identity.sourceIp", status = "$context.status", latency = "$context.responseLatency" })
  }
  #checkov:skip=CKV2_AWS_51:clients authenticate with the API key, not client certificates
  #checkov:skip=CKV2_AWS_29:a WAF costs more than this endpoint; the usage plan throttles
  #checkov:skip=CKV_AWS_120:responses are per image, caching them would serve stale reads
  #checkov:skip=CKV2_AWS_4:execution logging needs the account-wide API Gateway CloudWatch role, shared by every API of the account (set once outside this stack); access logs are on
}

resource "aws_api_gateway_usage_plan" "clients" {
  name = "${var.name}-clients"
  api_stages {
    api_id = aws_api_gateway_rest_api.api.id
    stage  = aws_api_gateway_stage.v1.stage_name
  }
  throttle_settings {
    rate_limit  = 5
    burst_limit = 10
  }
  quota_settings {
    limit  = 10000
    period = "MONTH"
  }
}

resource "aws_api_gateway_api_key" "client" {
  name = "${var.name}-client"
}

resource "aws_api_gateway_usage_plan_key" "client" {
  key_id        = aws_api_gateway_api_key.client.id
  key_type      = "API_KEY"
  usage_plan_id = aws_api_gateway_usage_plan.clients.id
}
