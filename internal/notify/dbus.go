package notify

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

const (
	notificationsName  = "org.freedesktop.Notifications"
	notificationsPath  = dbus.ObjectPath("/org/freedesktop/Notifications")
	notificationsIface = "org.freedesktop.Notifications"
)

// sendDBus connects to the session bus at addr with the process's own
// credentials and asks the desktop's notification server to show the
// notification, returning the id the server assigned.
func sendDBus(ctx context.Context, addr string, req request) (uint32, error) {
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("connect to the session bus %s: %w", addr, err)
	}
	defer conn.Close()
	obj := conn.Object(notificationsName, notificationsPath)
	var id uint32
	err = obj.CallWithContext(ctx, notificationsIface+".Notify", 0,
		appName, uint32(0), "security-high", req.Summary, req.Body,
		[]string{}, map[string]dbus.Variant{"urgency": dbus.MakeVariant(byte(1))}, int32(notificationExpire),
	).Store(&id)
	if err != nil {
		return 0, fmt.Errorf("call %s.Notify on %s (is a notification server running in the session?): %w", notificationsIface, addr, err)
	}
	return id, nil
}
