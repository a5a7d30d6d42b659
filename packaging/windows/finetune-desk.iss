; Inno Setup script of the Windows installer. UNTESTED: written for Inno Setup 6, never run
; (the project's CI has no Windows machine yet). See the README's "Windows installer" section.
;
; Build, on Windows, from the repository root:
;   1. make the onedir bundle:  .venv\Scripts\pyinstaller --noconfirm --clean packaging\finetune-desk.spec
;      (dist\finetune-desk\finetune-desk.exe and dist\finetune-desk\_internal\, uv.exe included)
;   2. compile this script:     "C:\Program Files (x86)\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 packaging\windows\finetune-desk.iss
; The installer lands in dist\finetune-desk-<version>-setup.exe. Per-user install (no admin),
; so the app can write its trainer runtime into %LOCALAPPDATA%\FinetuneDesk\runtime.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

[Setup]
AppId={{6E7C1B0A-4F0B-4C53-9E0E-2B8F7C1D9A41}
AppName=Finetune Desk
AppVersion={#AppVersion}
AppPublisher=Finetune Desk contributors
DefaultDirName={localappdata}\Programs\Finetune Desk
DefaultGroupName=Finetune Desk
PrivilegesRequired=lowest
OutputDir=..\..\dist
OutputBaseFilename=finetune-desk-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
LicenseFile=..\..\LICENSE
UninstallDisplayIcon={app}\finetune-desk.exe
WizardStyle=modern

[Files]
Source: "..\..\dist\finetune-desk\*"; DestDir: "{app}"; Flags: recursesubdirs ignoreversion

[Icons]
Name: "{group}\Finetune Desk"; Filename: "{app}\finetune-desk.exe"
Name: "{userdesktop}\Finetune Desk"; Filename: "{app}\finetune-desk.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; Flags: unchecked

[Run]
Filename: "{app}\finetune-desk.exe"; Description: "Start Finetune Desk"; Flags: nowait postinstall skipifsilent

; The trainer runtime (%LOCALAPPDATA%\FinetuneDesk\runtime) and the jobs are the user's data:
; the uninstaller leaves them; `finetune-desk runtime remove --yes` deletes the runtime first.
