# op-dbus built from this repository.
{
  lib,
  buildGoModule,
  version ? "dev",
}:

buildGoModule {
  pname = "op-dbus";
  inherit version;

  src = lib.cleanSource ../.;

  # Hash of `go mod vendor`; update it when go.mod or go.sum change
  # (build once with lib.fakeHash and copy the hash Nix reports).
  vendorHash = "sha256-wbCtdyukPIvJgAib7MLA3MwjMldpFVCXWqIwr4Vcgyc=";

  subPackages = [ "cmd/op-dbus" ];

  ldflags = [
    "-s"
    "-w"
    "-X github.com/op-dbus/op-dbus/internal/cli.Version=${version}"
  ];

  # The tests need root and the test bed's daemons.
  doCheck = false;

  # The D-Bus policy for org.opdbus1 (only root may own it and call Apply).
  postInstall = ''
    install -Dm644 dist/org.opdbus1.conf $out/share/dbus-1/system.d/org.opdbus1.conf
  '';

  meta = {
    description = "Treat a Linux host as one declarative state document";
    homepage = "https://github.com/op-dbus/op-dbus";
    mainProgram = "op-dbus";
    platforms = lib.platforms.linux;
  };
}
