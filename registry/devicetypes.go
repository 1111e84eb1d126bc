package registry

import (
	"context"
	"regexp"
	"strings"

	"devreg"
	"devreg/broker"
	"devreg/credential"
	"devreg/devcert"
)

func checkDeviceType(t devreg.DeviceType) error {
	if err := checkName("name", t.Name, 1, 200); err != nil {
		return err
	}
	if err := checkLength("description", t.Description, 0, 2000); err != nil {
		return err
	}
	if t.MinSecretLength < credential.MinSecretLength || t.MinSecretLength > credential.MaxSecretLength {
		return devreg.Errorf(devreg.EINVALID, "min_secret_length must be between %d and %d; it is %d",
			credential.MinSecretLength, credential.MaxSecretLength, t.MinSecretLength)
	}
	if g := t.RotationGraceSeconds; g != nil && (*g < 0 || *g > devreg.MaxRotationGraceSeconds) {
		return devreg.Errorf(devreg.EINVALID, "rotation_grace_seconds must be between 0 and %d (30 days); it is %d", devreg.MaxRotationGraceSeconds, *g)
	}
	if n := t.MaxRotationsPerHour; n != nil && (*n < 1 || *n > devreg.MaxRotationsPerHourLimit) {
		return devreg.Errorf(devreg.EINVALID, "max_rotations_per_hour must be between 1 and %d; it is %d", devreg.MaxRotationsPerHourLimit, *n)
	}
	if _, err := devcert.ParseIDField(t.CertificateIDField); err != nil {
		return devreg.Errorf(devreg.EINVALID, "certificate_id_field must be subject_cn, san_uri or san_dns; it is %q", t.CertificateIDField)
	}
	if n := t.AutoRegisterLimit; n != nil && (*n < 1 || *n > devreg.MaxAutoRegisterLimit) {
		return devreg.Errorf(devreg.EINVALID, "auto_register_limit must be between 1 and %d devices an hour; it is %d", devreg.MaxAutoRegisterLimit, *n)
	}
	if err := checkTopicFilters("mqtt_publish", t.MQTTPublish); err != nil {
		return err
	}
	return checkTopicFilters("mqtt_subscribe", t.MQTTSubscribe)
}

// maxTopicFilters bounds a device type's topic filters for one action, and maxFilterLength each.
const (
	maxTopicFilters = 32
	maxFilterLength = 1024
)

// placeholders matches the {name} parts of a topic filter.
var placeholders = regexp.MustCompile(`\{[^{}]*\}`)

func checkTopicFilters(field string, filters []string) error {
	if len(filters) > maxTopicFilters {
		return devreg.Errorf(devreg.EINVALID, "%s may hold at most %d topic filters; it holds %d", field, maxTopicFilters, len(filters))
	}
	for _, f := range filters {
		if len(f) > maxFilterLength {
			return devreg.Errorf(devreg.EINVALID, "%s: a topic filter may be at most %d bytes long", field, maxFilterLength)
		}
		if err := broker.CheckFilter(f); err != nil {
			return devreg.Errorf(devreg.EINVALID, "%s: %v", field, err)
		}
		for _, p := range placeholders.FindAllString(f, -1) {
			if p != "{device_id}" && p != "{account_id}" && p != "{device_type_id}" {
				return devreg.Errorf(devreg.EINVALID, "%s: topic filter %q has the placeholder %s; the placeholders are {device_id}, {account_id} and {device_type_id}", field, f, p)
			}
		}
	}
	return nil
}

// CreateDeviceType defines a device type in the caller's account. A MinSecretLength of 0 takes
// the default minimum.
func (s *Service) CreateDeviceType(ctx context.Context, t devreg.DeviceType) (devreg.DeviceType, error) {
	c, err := authorize(ctx, devreg.ScopeRegister)
	if err != nil {
		return t, err
	}
	if err := unrestricted(c, "define device types"); err != nil {
		return t, err
	}
	t.Name, t.Description = strings.TrimSpace(t.Name), strings.TrimSpace(t.Description)
	if t.MinSecretLength == 0 {
		t.MinSecretLength = credential.MinSecretLength
	}
	if t.MQTTPublish == nil {
		t.MQTTPublish = broker.DefaultFilters
	}
	if t.MQTTSubscribe == nil {
		t.MQTTSubscribe = broker.DefaultFilters
	}
	if t.RotationGraceSeconds == nil {
		grace := devreg.DefaultRotationGraceSeconds
		t.RotationGraceSeconds = &grace
	}
	if t.MaxRotationsPerHour == nil {
		t.MaxRotationsPerHour = new(devreg.DefaultMaxRotationsPerHour)
	}
	if t.CertificateIDField == "" {
		t.CertificateIDField = devreg.DefaultCertificateIDField
	}
	if t.AutoRegisterLimit == nil {
		t.AutoRegisterLimit = new(devreg.DefaultAutoRegisterLimit)
	}
	if err := checkDeviceType(t); err != nil {
		return t, err
	}
	t.ID, t.AccountID, t.DeviceCount, t.CreatedAt = credential.RandomID("dt", 16), c.AccountID, 0, s.now()
	ctx = s.audited(ctx, actorOf(c), "devicetype.create", devreg.AuditObject{Type: "devicetype", ID: t.ID}, typeFields(t))
	return t, s.store.CreateDeviceType(ctx, t)
}

// ListDeviceTypes returns the caller's device types by name.
func (s *Service) ListDeviceTypes(ctx context.Context) ([]devreg.DeviceType, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, err
	}
	types, err := s.store.ListDeviceTypes(ctx, c.AccountID)
	if err != nil || c.DeviceTypeIDs == nil {
		return types, err
	}
	reached := types[:0]
	for _, t := range types {
		if c.Reaches(t.ID) {
			reached = append(reached, t)
		}
	}
	return reached, nil
}

// DeviceType returns one of the caller's device types.
func (s *Service) DeviceType(ctx context.Context, id string) (devreg.DeviceType, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return devreg.DeviceType{}, err
	}
	if !opaqueID(id) || !c.Reaches(id) {
		return devreg.DeviceType{}, notFound("device type", id)
	}
	return s.store.DeviceType(ctx, c.AccountID, id)
}

// UpdateDeviceType changes a device type. A new minimum secret length applies to new
// registrations only.
func (s *Service) UpdateDeviceType(ctx context.Context, id string, upd devreg.DeviceTypeUpdate) (devreg.DeviceType, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.DeviceType{}, err
	}
	if err := unrestricted(c, "change device types"); err != nil {
		return devreg.DeviceType{}, err
	}
	if !opaqueID(id) {
		return devreg.DeviceType{}, notFound("device type", id)
	}
	t, err := s.store.DeviceType(ctx, c.AccountID, id)
	if err != nil {
		return t, err
	}
	before := typeFields(t)
	if upd.Name != nil {
		t.Name = strings.TrimSpace(*upd.Name)
	}
	if upd.Description != nil {
		t.Description = strings.TrimSpace(*upd.Description)
	}
	if upd.MinSecretLength != nil {
		t.MinSecretLength = *upd.MinSecretLength
	}
	if upd.MQTTPublish != nil {
		t.MQTTPublish = upd.MQTTPublish
	}
	if upd.MQTTSubscribe != nil {
		t.MQTTSubscribe = upd.MQTTSubscribe
	}
	if upd.RotationGraceSeconds != nil {
		t.RotationGraceSeconds = upd.RotationGraceSeconds
	}
	if upd.MaxRotationsPerHour != nil {
		t.MaxRotationsPerHour = upd.MaxRotationsPerHour
	}
	if upd.CertificateIDField != nil {
		t.CertificateIDField = *upd.CertificateIDField
		if t.CertificateIDField == "" {
			return t, devreg.Errorf(devreg.EINVALID, "certificate_id_field must be subject_cn, san_uri or san_dns; it is empty")
		}
	}
	if upd.AutoRegister != nil {
		t.AutoRegister = *upd.AutoRegister
	}
	if upd.AutoRegisterLimit != nil {
		t.AutoRegisterLimit = upd.AutoRegisterLimit
	}
	if err := checkDeviceType(t); err != nil {
		return t, err
	}
	diff := change(before, typeFields(t))
	if unchanged(diff) {
		return t, nil // nothing to change, nothing to record
	}
	ctx = s.audited(ctx, actorOf(c), "devicetype.update", devreg.AuditObject{Type: "devicetype", ID: t.ID}, diff)
	defer s.forgetType(c.AccountID, t.ID)
	return t, s.store.UpdateDeviceType(ctx, t)
}

// DeleteDeviceType removes a device type that has no devices.
func (s *Service) DeleteDeviceType(ctx context.Context, id string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	if err := unrestricted(c, "delete device types"); err != nil {
		return err
	}
	if !opaqueID(id) {
		return notFound("device type", id)
	}
	ctx = s.audited(ctx, actorOf(c), "devicetype.delete", devreg.AuditObject{Type: "devicetype", ID: id}, nil)
	defer s.forgetType(c.AccountID, id)
	return s.store.DeleteDeviceType(ctx, c.AccountID, id)
}

// typeFields are a device type's fields as its audit entries show them.
func typeFields(t devreg.DeviceType) map[string]any {
	grace := devreg.DefaultRotationGraceSeconds
	if t.RotationGraceSeconds != nil {
		grace = *t.RotationGraceSeconds
	}
	return map[string]any{"name": t.Name, "description": t.Description, "min_secret_length": t.MinSecretLength,
		"mqtt_publish": t.MQTTPublish, "mqtt_subscribe": t.MQTTSubscribe, "rotation_grace_seconds": grace,
		"max_rotations_per_hour": t.RotationLimit(), "certificate_id_field": t.IDField(), "auto_register": t.AutoRegister,
		"auto_register_limit": t.AutoRegisterMax()}
}
