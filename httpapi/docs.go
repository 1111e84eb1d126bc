package httpapi

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed swaggerui docs.html docs.js
var docsFS embed.FS

// registerDocs serves the interactive API docs (Swagger UI, vendored and embedded) at /docs.
func registerDocs(mux *http.ServeMux) {
	assets, _ := fs.Sub(docsFS, "swaggerui")
	mux.HandleFunc("GET /docs", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, docsFS, "docs.html")
	})
	mux.HandleFunc("GET /docs/docs.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, docsFS, "docs.js")
	})
	mux.Handle("GET /docs/assets/", http.StripPrefix("/docs/assets/", http.FileServerFS(assets)))
}
