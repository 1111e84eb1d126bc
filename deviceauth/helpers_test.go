package deviceauth_test

import "devreg/credential"

func credentialNewKeyLine() string { return credential.NewKeyLine() }
