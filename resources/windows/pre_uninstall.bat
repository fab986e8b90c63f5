@echo off
rem Run by the MSI before it removes MeshDesk (briefcase.toml: pre_uninstall_script), in the
rem installed folder: takes away the meshdesk:// link handler the app wrote under
rem HKCU\Software\Classes\meshdesk, if it still names this MeshDesk.exe. Never fails the
rem uninstall: a handler left behind only makes a link open nothing.
rem The script's own folder first (the MSI may run it from elsewhere), then the current one.
if exist "%~dp0MeshDesk.exe" (
    "%~dp0MeshDesk.exe" --unregister-links
) else (
    "%CD%\MeshDesk.exe" --unregister-links
)
exit /b 0
