// Starts Swagger UI on the gateway's own OpenAPI document. Served as a static asset.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui", deepLinking: true });
