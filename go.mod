module hotfleet

go 1.26
