// rig's API explorer: Swagger UI (vendored in swagger-ui/) over /openapi.json.
// Kept in a file, not inline, so the page's Content-Security-Policy allows no inline script.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    requestSnippetsEnabled: true,
    // Nothing from elsewhere: no validator badge (it calls validator.swagger.io), and
    // no ?url= or ?configUrl= taken from the address bar.
    validatorUrl: null,
    queryConfigEnabled: false,
  });
});
