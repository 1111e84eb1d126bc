package registry

import (
	"context"

	"devreg"
)

// CheckDeviceSecret reports whether secret is the registered secret of an enabled device in an
// enabled batch. An unknown device costs the same hashing as a known one, and every failure
// looks the same, so the answer reveals nothing else.
func (s *Service) CheckDeviceSecret(ctx context.Context, accountID, deviceID, secret string) (bool, error) {
	keyID, hash, enabled, err := s.store.DeviceSecret(ctx, accountID, deviceID)
	if err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND {
		return false, err
	}
	ok := s.keys.Verify(keyID, hash, accountID, deviceID, secret)
	return ok && enabled && err == nil, nil
}
