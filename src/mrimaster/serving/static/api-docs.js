// The API docs page (/api/docs): start Swagger UI (vendored from npm swagger-ui-dist) on the
// app's OpenAPI document. A file, not an inline <script>, so that the page's
// Content-Security-Policy needs no 'unsafe-inline' (the options are FastAPI's defaults).
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  if (!root || !window.SwaggerUIBundle) return;
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // no badge from validator.swagger.io: the document is never sent to another host
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis,
              window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
