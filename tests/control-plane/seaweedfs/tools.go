//go:build tools

// Pins the SeaweedFS module (go mod tidy keeps what a tools file imports).
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
