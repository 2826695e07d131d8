module hotfleet

go 1.26.0

require (
	github.com/godbus/dbus/v5 v5.2.4
	golang.org/x/arch v0.33.0
	golang.org/x/sys v0.50.0
)
